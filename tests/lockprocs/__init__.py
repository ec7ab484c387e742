"""Real OS processes for the lock tests (see ``lockproc.py``) and a small harness to drive them."""
