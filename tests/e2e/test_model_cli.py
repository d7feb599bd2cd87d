"""`evolution model define|show` as an administrator runs them: options or a file, revisions, what changed, history;
every bad option or field is one clear line on stderr, exit code 2, and nothing stored."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from evolution.cli.main import app
from tests.e2e.conftest import cli

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"registry.example.com/acme/yield-trainer@{DIGEST}"


def in_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The same command run by the CLI's own code in this process: the refusal battery below would otherwise pay
    a Python start-up per case (about 3 s each); the first case of each battery still runs as a real process."""
    result = CliRunner().invoke(app, list(args), env=env)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def shown(env: dict[str, str], tenant: str = "acme", model: str = "yield") -> dict[str, object]:
    document = json.loads(ok(cli(env, "model", "show", tenant, model, "--json")))
    assert isinstance(document, dict)
    return document


def test_define_with_options_then_show_it_as_text_json_and_history(cli_env: dict[str, str]) -> None:
    ok(cli(cli_env, "tenant", "create", "acme"))
    never = ok(cli(cli_env, "model", "show", "acme", "yield"))
    assert "revision 0, never defined: the built-in default applies" in never
    assert "builtin" in never

    defined = ok(
        cli(
            cli_env, "model", "define", "acme", "yield",
            "--feature", "rain_mm", "--feature", "temp_mean_c", "--feature", "crop:categorical",
            "--target", "yield_t_ha", "--loss", "mae",
            "--command", "python train.py --depth '4 deep'", "--code-file", "train.py",
            "--hyperparameter", "max_depth=4", "--hyperparameter", "booster=gbtree",
            "--timeout", "90m", "--memory-mb", "2048", "--reason", "bring our own model",
        )
    )  # fmt: skip
    assert (
        "acme/yield: revision 1 defined by local-operator (was revision 0, the built-in default)" in defined
    )
    assert "features: (none) -> rain_mm:numeric, temp_mean_c:numeric, crop:categorical" in defined
    assert "trainer.kind: builtin -> command" in defined
    assert "hyperparameters.max_depth: (unset) -> 4" in defined

    text = ok(cli(cli_env, "model", "show", "acme", "yield"))
    assert "acme/yield: revision 1, defined by local-operator at " in text
    for line in (
        "features         rain_mm (numeric), temp_mean_c (numeric), crop (categorical)",
        "target           yield_t_ha",
        "loss             mae",
        'hyperparameters  booster="gbtree", max_depth=4',
        "trainer          command: python train.py --depth '4 deep'",
        "code files     train.py",
        "time limit     90m",
        "memory         2048 MB",
    ):
        assert line in text, text

    document = shown(cli_env)
    assert document["revision"] == 1 and document["defined_by"] == "local-operator"
    assert document["definition"]["trainer"] == {  # type: ignore[index]
        "kind": "command",
        "argv": ["python", "train.py", "--depth", "4 deep"],
        "code_files": ["train.py"],
        "timeout_s": 5400.0,
        "memory_mb": 2048,
    }
    assert document["definition"]["hyperparameters"] == {"max_depth": 4, "booster": "gbtree"}  # type: ignore[index]

    image = ok(
        cli(
            cli_env, "model", "define", "acme", "yield",
            "--feature", "rain_mm", "--feature", "crop:categorical", "--target", "yield_t_ha",
            "--image", IMAGE, "--command", "python", "--arg", "/app/train.py",
            "--cpu", "2", "--memory", "4Gi", "--gpus", "1", "--timeout", "3h",
        )
    )  # fmt: skip
    assert "revision 2 defined by local-operator (was revision 1)" in image
    assert "trainer.kind: command -> image" in image
    assert "hyperparameters.max_depth: 4 -> (unset)" in image  # the definition is given whole, not merged

    history = ok(cli(cli_env, "model", "show", "acme", "yield", "--history"))
    assert "revision 1, defined by local-operator" in history and "(reason: bring our own model)" in history
    assert "revision 2, defined by local-operator" in history
    assert f"image: {IMAGE}" in history and "resources      cpu 2, memory 4Gi, gpus 1" in history
    revisions = json.loads(ok(cli(cli_env, "model", "show", "acme", "yield", "--history", "--json")))
    assert [r["revision"] for r in revisions] == [1, 2]


def test_define_from_a_json_or_toml_file_and_from_what_show_json_printed(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    ok(cli(cli_env, "tenant", "create", "acme"))
    as_json = tmp_path / "yield.json"
    as_json.write_text(
        json.dumps(
            {
                "features": [{"name": "rain_mm"}, {"name": "crop", "type": "categorical"}],
                "target": "yield_t_ha",
                "hyperparameters": {"max_depth": 4},
                "trainer": {"kind": "image", "image": IMAGE, "args": ["/app/train.py"], "timeout_s": 3600},
                "reason": "from a file",
            }
        )
    )
    assert "revision 1" in ok(cli(cli_env, "model", "define", "acme", "yield", "--file", str(as_json)))
    first = shown(cli_env)
    assert first["definition"]["trainer"]["image"] == IMAGE  # type: ignore[index]

    as_toml = tmp_path / "yield.toml"
    as_toml.write_text(
        'target = "yield_t_ha"\n'
        "max_model_mb = 50\n"
        '[[features]]\nname = "rain_mm"\n'
        "[hyperparameters]\nlearning_rate = 0.1\n"
        '[trainer]\nkind = "command"\nargv = ["python", "train.py"]\n'
    )
    changed = ok(cli(cli_env, "model", "define", "acme", "yield", "--file", str(as_toml), "--reason", "toml"))
    assert "revision 2" in changed and "max_model_mb: 200 -> 50" in changed
    assert shown(cli_env)["definition"]["max_model_mb"] == 50  # type: ignore[index]

    exported = tmp_path / "exported.json"
    exported.write_text(json.dumps(first))  # what `show --json` printed for revision 1
    again = ok(cli(cli_env, "model", "define", "acme", "yield", "--file", str(exported)))
    assert "revision 3" in again
    assert shown(cli_env)["definition"] == first["definition"]


def test_a_model_of_another_tenant_or_name_is_its_own(cli_env: dict[str, str]) -> None:
    for tenant in ("acme", "globex"):
        ok(cli(cli_env, "tenant", "create", tenant))
    ok(cli(cli_env, "model", "define", "acme", "yield", "--hyperparameter", "max_depth=3"))
    assert shown(cli_env, "globex")["revision"] == 0
    assert shown(cli_env, "acme", "quality")["revision"] == 0
    assert shown(cli_env, "acme")["revision"] == 1


BAD = [
    (
        "tag-only image",
        ["--feature", "a", "--image", "registry.example.com/t:latest"],
        "--image: ",
        "not pinned",
    ),
    ("empty argv", ["--feature", "a", "--command", ""], "--command: ", "the command is empty"),
    ("duplicate feature", ["--feature", "a", "--feature", "a"], "--feature: ", "a listed twice"),
    (
        "target listed as a feature",
        ["--feature", "yield_t_ha", "--target", "yield_t_ha"],
        "--target: ",
        "'yield_t_ha' is also listed as a feature",
    ),
    (
        "builtin and image",
        ["--builtin", "--image", IMAGE],
        "",
        "--builtin and --image choose different trainers",
    ),
    (
        "an image option for a command",
        ["--feature", "a", "--command", "python t.py", "--cpu", "2"],
        "",
        "--cpu applies to an image trainer (--image), not to a command trainer",
    ),
    (
        "a command option for an image",
        ["--feature", "a", "--image", IMAGE, "--code-file", "t.py"],
        "",
        "--code-file",
    ),
    ("timeout", ["--feature", "a", "--command", "python t.py", "--timeout", "soon"], "", "--timeout 'soon'"),
    ("feature type", ["--feature", "crop:text"], "", "--feature 'crop:text': the type after ':' is numeric"),
    ("hyperparameter", ["--hyperparameter", "depth"], "", "--hyperparameter 'depth': write KEY=VALUE"),
    ("loss", ["--loss", "rmse"], "--loss: ", "'mae'"),
    ("a file and options", ["--file", "x.json", "--target", "y"], "", "--file gives the whole definition"),
    ("a missing file", ["--file", "missing.json"], "", "--file missing.json: no such file"),
]


def test_each_bad_option_or_field_is_one_clear_line_exit_2_and_nothing_stored(
    cli_env: dict[str, str],
) -> None:
    ok(cli(cli_env, "tenant", "create", "acme"))
    wrong = []
    for i, (case, options, option, says) in enumerate(BAD):
        run = cli if i == 0 else in_process
        result = run(cli_env, "model", "define", "acme", "yield", *options)
        one_line = result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        if not (result.returncode == 2 and one_line and option in result.stderr and says in result.stderr):
            wrong.append(f"{case}: exit {result.returncode}, stderr {result.stderr!r}")
        elif result.stdout:
            wrong.append(f"{case}: printed {result.stdout!r}")
    assert not wrong, "\n".join(wrong)
    assert shown(cli_env)["revision"] == 0  # none of them stored a revision


def test_every_bad_option_of_one_command_is_named_at_once(cli_env: dict[str, str]) -> None:
    ok(cli(cli_env, "tenant", "create", "acme"))
    result = cli(
        cli_env, "model", "define", "acme", "yield",
        "--feature", "a", "--feature", "a", "--image", "trainer:v1", "--memory-mb", "512", "--loss", "mse",
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    for named in (
        "--memory-mb applies to a command trainer",
        "--feature: a listed twice",
        "--image: ",
        "--loss: ",
    ):
        assert named in result.stderr, result.stderr
    assert shown(cli_env)["revision"] == 0


def test_a_non_admin_operator_and_an_unknown_tenant_are_refused_and_nothing_is_stored(
    cli_env: dict[str, str],
) -> None:
    ok(cli(cli_env, "tenant", "create", "acme"))
    for role, run in (("manager", cli), ("viewer", in_process)):
        refused = run({**cli_env, "EVOLUTION_OPERATOR_ROLE": role}, "model", "define", "acme", "yield")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"define_model: role {role} may not do this" in refused.stderr
    viewer = ok(cli({**cli_env, "EVOLUTION_OPERATOR_ROLE": "viewer"}, "model", "show", "acme", "yield"))
    assert "revision 0" in viewer  # reading is for every role of the tenant
    other = cli({**cli_env, "EVOLUTION_OPERATOR_TENANTS": '["globex"]'}, "model", "define", "acme", "yield")
    assert other.returncode == 2 and "does not belong to tenant 'acme'" in other.stderr

    for command, run in ((["define"], cli), (["show"], in_process), (["show", "--history"], in_process)):
        unknown = run(cli_env, "model", command[0], "ghost", "yield", *command[1:])
        assert unknown.returncode == 2, unknown.stderr
        assert unknown.stderr == "error: tenant 'ghost' does not exist\n"
    bad_name = cli(cli_env, "model", "define", "acme", "has space")
    assert bad_name.returncode == 2 and "model name 'has space'" in bad_name.stderr
    assert shown(cli_env)["revision"] == 0
