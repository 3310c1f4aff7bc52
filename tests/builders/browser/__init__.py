"""Helpers for the real-browser test of the student experience (tests/course/test_browser.py).

`lab` starts and stops an isolated JupyterLab server; `notebook_page` drives a notebook in
that server through Chromium with Playwright, the way a student uses it: clicks, keys, menus.
"""
