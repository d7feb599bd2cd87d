"""Who is signed in: a local user (username and password), or a user named by a trusted proxy header.

The dashboard only hides what a role may not do; every action still goes through the service layer, which refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dashboard.state import get_services
from evolution.errors import EvolutionError
from evolution.governance.users import UserAccess
from evolution.platform.wiring import Services
from evolution.security import Principal

SESSION_KEY = "signed_in"


def signed_in(services: Services) -> UserAccess | None:
    current = st.session_state.get(SESSION_KEY)
    if isinstance(current, UserAccess):
        # Read the grants afresh on every run: a revoked role or a disabled user takes effect at once.
        try:
            current = services.users.access_for(current.username)
        except EvolutionError:
            sign_out()
            return None
        st.session_state[SESSION_KEY] = current
        return current
    header = services.settings.dashboard_trusted_header
    if header:
        username = st.context.headers.get(header)
        if username:
            try:
                current = services.users.access_for(username)
            except EvolutionError:
                return None
            st.session_state[SESSION_KEY] = current
            return current
    return None


def sign_in(services: Services, username: str, password: str) -> UserAccess:
    access = services.users.authenticate(username, password)
    st.session_state[SESSION_KEY] = access
    return access


def sign_out() -> None:
    st.session_state.pop(SESSION_KEY, None)


@dataclass(frozen=True)
class PageContext:
    services: Services
    user: UserAccess
    tenant: str
    principal: Principal


def page_context() -> PageContext:
    """What every signed-in page starts from; stops the page when the user has no tenant to act for."""
    services = get_services()
    user = signed_in(services)
    if user is None:  # the router shows only the sign-in page then; a page reached otherwise shows nothing
        st.stop()
    tenant = st.session_state.get("tenant")
    if not tenant:
        st.info("You have no tenant yet: ask an administrator for a role (`evolution users grant`).")
        st.stop()
    return PageContext(services, user, tenant, user.principal(tenant))
