"""The dashboard process's wiring: settings and services built once per configuration."""

from __future__ import annotations

import streamlit as st

from evolution.settings import Settings, load_settings
from evolution.wiring import Services, build_services


@st.cache_resource
def _services_for(settings_json: str) -> Services:
    return build_services(Settings.model_validate_json(settings_json))


def get_services() -> Services:
    return _services_for(load_settings().model_dump_json())
