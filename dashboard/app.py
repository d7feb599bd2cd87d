"""Streamlit entry point: sign-in, the tenant the user acts for, and the pages their role may see."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import auth
from dashboard.state import TOOLBAR_MODE, get_services
from evolution.security import Role

PAGES = Path(__file__).parent / "views"
TENANT_KEY = "tenant"

st.set_page_config(page_title="Controlled Evolution", layout="wide")
st.set_option(
    "client.toolbarMode", TOOLBAR_MODE
)  # also when started with `streamlit run` instead of serve.py
services = get_services()
user = auth.signed_in(services)

if user is None:
    navigation = st.navigation([st.Page(PAGES / "signin.py", title="Sign in", default=True)])
else:
    tenants = user.tenants(services.tenants.tenant_ids())
    with st.sidebar:
        st.caption(f"Signed in as **{user.username}**")
        if tenants:
            st.selectbox("Tenant", tenants, key=TENANT_KEY)
        if st.button("Sign out"):
            auth.sign_out()
            st.rerun()
    role = user.role_for(st.session_state.get(TENANT_KEY) or (tenants[0] if tenants else "*"))
    pages = [
        st.Page(PAGES / "governance.py", title="Governance", default=True),
        st.Page(PAGES / "drift.py", title="Drift"),
        st.Page(PAGES / "explainability.py", title="Explainability"),
    ]
    if role in (Role.MANAGER, Role.ADMIN):
        pages.append(st.Page(PAGES / "executive.py", title="Executive"))
    navigation = st.navigation(pages)
navigation.run()
