"""The dashboard process's wiring: settings, services and the workflow engine, built once per configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import streamlit as st

from evolution.platform.orchestrator import Orchestrator, connect_orchestrator
from evolution.platform.settings import Settings, load_settings
from evolution.platform.wiring import Services, build_services

T = TypeVar("T")
# No Deploy button and no developer menu (rerun, clear cache, settings): the dashboard is an application, not a
# Streamlit script under development.
TOOLBAR_MODE = "minimal"


@st.cache_resource
def _services_for(settings_json: str, _settings: Settings) -> Services:
    """Cached by the settings' JSON, built from the settings themselves: in the JSON every secret (SMTP password,
    webhook secret, ...) is masked, so settings rebuilt from it would carry '**********' instead."""
    return build_services(_settings)


def get_services() -> Services:
    settings = load_settings()
    return _services_for(settings.model_dump_json(), settings)


def with_orchestrator(work: Callable[[Orchestrator], Awaitable[T]]) -> T:
    """Run one call against the workflow engine (a short-lived client: Streamlit reruns scripts on threads)."""

    async def run() -> T:
        orchestrator = await connect_orchestrator(get_services().settings)
        try:
            return await work(orchestrator)
        finally:
            await orchestrator.close()

    return asyncio.run(run())
