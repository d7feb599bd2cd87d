"""A home as backup and restore see it: where its parts live, its registry's backend, the parts a run covers.

:class:`Home` is what :mod:`evolution.backup.create` and :mod:`evolution.backup.restore` read of the settings;
:func:`parse_parts` reads ``--what``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from evolution.backup.manifest import ALL_PARTS, Backend, Part
from evolution.errors import InvalidInput


class Home(Protocol):
    """Where a home's parts live: what backup and restore read of the settings (``Settings`` satisfies it)."""

    @property
    def home(self) -> Path: ...
    @property
    def artifacts_dir(self) -> Path: ...
    @property
    def keys_dir(self) -> Path: ...
    @property
    def resolved_database_url(self) -> str: ...
    @property
    def resolved_owner_database_url(self) -> str: ...


def backend_of(url: str) -> Backend:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("postgresql"):
        return "postgresql"
    raise InvalidInput(f"backups support SQLite and PostgreSQL registries, not {url.split(':', 1)[0]}")


def parse_parts(text: str | Iterable[str] | None) -> list[Part]:
    """``"registry,artifacts"`` → the parts, in their canonical order; unknown names are refused."""
    if text is None:
        return list(ALL_PARTS)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = sorted(set(names) - set(ALL_PARTS))
    if unknown or not names:
        raise InvalidInput(f"--what takes a comma-separated list of {', '.join(ALL_PARTS)}; got {text!r}")
    return [p for p in ALL_PARTS if p in names]
