"""Overview: each tenant's model versions, the latest drift reports and the audit trail."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.state import get_services

services = get_services()
st.title("Controlled Evolution")
tenant_ids = data.tenants(services)
if not tenant_ids:
    st.info("No tenants yet. Run `make demo` (or `evolution demo --fast`) to create one.")
    st.stop()
tenant = st.selectbox("Tenant", tenant_ids)
st.caption(f"Audit chain: {data.chain_status(services, tenant)}")

st.subheader("Model versions")
st.dataframe(data.version_rows(services, tenant), use_container_width=True, hide_index=True)
st.subheader("Drift reports")
st.dataframe(data.drift_rows(services, tenant), use_container_width=True, hide_index=True)
st.subheader("Audit trail")
st.dataframe(data.audit_rows(services, tenant), use_container_width=True, hide_index=True)
