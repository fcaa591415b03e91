"""Streamlit code shared by app.py and the pages (not a page itself: Streamlit only lists pages/*.py)."""
