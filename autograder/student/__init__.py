"""The student-side library shipped in every assignment as tclib.py: stdlib and numpy only.

`autograder release` copies tclib.py into source/common/, from where each assignment links it.
"""
