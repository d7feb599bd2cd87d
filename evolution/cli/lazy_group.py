"""A command group that imports a command's module only when that command runs.

`evolution --help` lists the commands from an index (name, module, and the first paragraph of the command's help)
without importing any of them; invoking a command (`evolution COMMAND ...`, `evolution COMMAND --help` too)
imports its module, which defines it through ``register(app)``, and builds that command alone. So the start-up
of every command pays for what that command uses, never for the numeric stack or the cloud clients of another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.main
from typer import _click  # typer vendors click: its group API is typed with these classes
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    name: str
    module: str  # whose ``register(app)`` defines the command
    summary: str  # the first paragraph of the command's help, as `evolution --help` lists it


class LazyGroup(TyperGroup):
    """Until a command is invoked, it is a stand-in that has only its name and summary; the listing, shell
    completion of command names and the "did you mean" of a typo need nothing more."""

    index: ClassVar[tuple[LazyCommand, ...]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for entry in self.index:
            self.commands[entry.name] = TyperCommand(name=entry.name, help=entry.summary)
        self._loaded: set[str] = set()

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        if args:
            self.load(args[0])
        return super().resolve_command(ctx, args)

    def load(self, name: str) -> None:
        """Replace the stand-in of ``name`` by the real command (a no-op for an unknown or loaded name)."""
        entry = next((e for e in self.index if e.name == name), None)
        if entry is None or name in self._loaded:
            return
        register: Callable[[typer.Typer], None] = importlib.import_module(entry.module).register
        # Built as the root would build it (same markup mode and suggestions), from that one registration.
        holder = typer.Typer(
            rich_markup_mode=self.rich_markup_mode,
            suggest_commands=self.suggest_commands,
            pretty_exceptions_enable=False,
        )
        register(holder)
        holder.registered_commands = [c for c in holder.registered_commands if c.name == name]
        holder.registered_groups = [g for g in holder.registered_groups if g.name == name]
        self.commands[name] = typer.main.get_group(holder).commands[name]
        self._loaded.add(name)
