"""Controlled Evolution: the domain, its ports and their adapters, grouped by capability. Never imports Temporal.

Each subpackage is a room whose ``__init__`` says what it owns and what it may import; ``docs/architecture.md``
draws the map and ``pyproject.toml``'s import-linter contracts enforce it. The modules at the top (errors,
timeutil, canonical, security, lifecycle, contracts) are the vocabulary every room shares, each saying why it
stays here.
"""

__version__ = "0.1.0"
