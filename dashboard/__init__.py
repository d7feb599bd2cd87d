"""The Streamlit dashboard: governance, drift and executive views (pages are thin; logic lives in modules)."""
