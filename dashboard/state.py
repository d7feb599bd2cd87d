"""The dashboard process's wiring: settings, services and the workflow engine, built once per configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import streamlit as st

from evolution.orchestrator import Orchestrator, connect_orchestrator
from evolution.settings import Settings, load_settings
from evolution.wiring import Services, build_services

T = TypeVar("T")


@st.cache_resource
def _services_for(settings_json: str) -> Services:
    return build_services(Settings.model_validate_json(settings_json))


def get_services() -> Services:
    return _services_for(load_settings().model_dump_json())


def with_orchestrator(work: Callable[[Orchestrator], Awaitable[T]]) -> T:
    """Run one call against the workflow engine (a short-lived client: Streamlit reruns scripts on threads)."""

    async def run() -> T:
        orchestrator = await connect_orchestrator(get_services().settings)
        try:
            return await work(orchestrator)
        finally:
            await orchestrator.close()

    return asyncio.run(run())
