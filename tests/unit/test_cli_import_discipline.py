"""The CLI starts light (issue 17): importing its entry point and `evolution --help` load neither the numeric,
cloud, dashboard or workflow-engine libraries nor the database; each command imports what it uses when it runs.
The index `evolution --help` lists from stays true to the commands: the same names in the same order, each with
the first paragraph of the command's own help."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from evolution.cli import lazy_group
from evolution.cli.main import COMMANDS, app

HEAVY = {
    "sklearn",
    "scipy",
    "numpy",
    "shap",
    "kubernetes",
    "boto3",
    "botocore",
    "streamlit",
    "temporalio",
    "pandas",
    "pyarrow",
    "sqlalchemy",
}
HEAVY_BUT_THE_DATABASE = HEAVY - {"sqlalchemy"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, set[str]]:
    """The console entry point in a fresh interpreter: its exit code, its output and the top-level packages it
    loaded (printed on the last line, after the command's own output)."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['evolution', *{list(args)!r}]\n"
        "from evolution.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as stop:\n"
        "    status = stop.code\n"
        "print(json.dumps([status, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    *output, last = done.stdout.splitlines()
    status, loaded = json.loads(last)
    return status, "\n".join(output) + done.stderr, set(loaded)


def test_importing_the_entry_point_loads_no_heavy_library_and_no_command() -> None:
    code = "import json, sys\nimport evolution.cli.main\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert sorted({m.split(".")[0] for m in loaded} & HEAVY) == []
    commands = sorted(
        m for m in loaded if m.startswith("evolution.") and m.removeprefix("evolution.") != "cli"
    )
    # exit_codes: the words of the root help's epilog, a module without imports.
    assert commands == ["evolution.cli.exit_codes", "evolution.cli.lazy_group", "evolution.cli.main"]


def test_help_lists_every_command_and_loads_no_heavy_library() -> None:
    status, output, loaded = run_cli("--help")
    assert status == 0, output
    for entry in COMMANDS:
        assert f" {entry.name} " in output, entry.name
    assert sorted(loaded & HEAVY) == []


def test_a_read_command_loads_the_database_but_no_numeric_cloud_or_engine_library(tmp_path: Path) -> None:
    env = {"EVOLUTION_HOME": str(tmp_path)}
    created, output, _ = run_cli("tenant", "create", "acme", env=env)  # an unknown tenant is an error now
    assert created == 0, output
    status, output, loaded = run_cli("versions", "--tenant", "acme", env=env)
    assert status == 0, output
    assert "sqlalchemy" in loaded
    assert sorted(loaded & HEAVY_BUT_THE_DATABASE) == []


def test_each_summary_is_the_first_paragraph_of_the_commands_own_help() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, lazy_group.LazyGroup)
    for entry in COMMANDS:
        stand_in = group.commands[entry.name]
        group.load(entry.name)
        command = group.commands[entry.name]
        assert command is not stand_in, entry.name
        help_text = command.short_help or command.help or ""
        assert inspect.cleandoc(help_text).split("\n\n")[0] == entry.summary, entry.name


def test_every_command_a_module_registers_is_in_the_index_under_that_module() -> None:
    for module in sorted({e.module for e in COMMANDS}):
        holder = typer.Typer()
        importlib.import_module(module).register(holder)
        registered = [c.name for c in holder.registered_commands] + [g.name for g in holder.registered_groups]
        assert sorted(registered) == sorted(e.name for e in COMMANDS if e.module == module), module


@pytest.mark.parametrize("columns", ["120", "60"])
def test_the_listing_from_the_index_reads_as_the_listing_from_the_loaded_commands(
    monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    runner = CliRunner()
    from_index = runner.invoke(app, ["--help"], env={"COLUMNS": columns})
    assert from_index.exit_code == 0
    init = lazy_group.LazyGroup.__init__

    def load_everything(self: lazy_group.LazyGroup, **attrs: object) -> None:
        init(self, **attrs)
        for entry in self.index:
            self.load(entry.name)

    monkeypatch.setattr(lazy_group.LazyGroup, "__init__", load_everything)
    from_commands = runner.invoke(app, ["--help"], env={"COLUMNS": columns})
    assert from_index.output == from_commands.output


def test_a_mistyped_command_is_still_offered_the_right_one() -> None:
    result = CliRunner().invoke(app, ["versoins"])
    assert result.exit_code == 2
    assert "Did you mean 'versions'?" in result.output
