"""App pages (Streamlit multipage folder); ``_shared`` holds the Streamlit code they share."""
