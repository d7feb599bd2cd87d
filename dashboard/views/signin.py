"""Sign in with a local user (created with `evolution users add`)."""

from __future__ import annotations

import streamlit as st

from dashboard import auth
from dashboard.state import get_services
from evolution.errors import PermissionDenied

st.title("Controlled Evolution")
st.write("Sign in to see your tenants' models, approve candidates and follow drift.")
with st.form("signin"):
    username = st.text_input("Username")
    password = st.text_input("Password", type="password")
    submitted = st.form_submit_button("Sign in")
if submitted:
    try:
        auth.sign_in(get_services(), username, password)
    except PermissionDenied as refused:
        st.error(str(refused))
    else:
        st.rerun()
st.caption(
    "No user yet? An administrator creates one: `evolution users add NAME --role manager --tenant TENANT`."
)
