"""Streamlit entry point: a router over the pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="Controlled Evolution", layout="wide")
navigation = st.navigation([st.Page(PAGES / "overview.py", title="Overview", default=True)])
navigation.run()
