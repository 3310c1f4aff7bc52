"""Hidden checks of the `attention_heads` assignment (A Mathematical Framework for Transformer
Circuits): test_questions.py for questions.ipynb, test_virtual_head.py for virtual_head.ipynb,
and reference.py, the math both are judged against."""
