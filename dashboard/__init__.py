"""The Streamlit dashboard: inputs, cached core calls, figures (see app.py)."""
