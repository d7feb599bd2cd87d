"""The workflow sandbox's side of the boundary stays light: importing the workflows (and the activity definitions
they reference by method) pulls in no database, numeric, cloud or registry code. The import-linter contracts in
pyproject.toml say the same statically; this proves it at run time."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "numpy", "scipy", "sklearn", "boto3", "kubernetes", "pyarrow")
ROOMS_OUTSIDE_THE_BOUNDARY = (
    "evolution.registry",
    "evolution.data",
    "evolution.training",
    "evolution.drift",
    "evolution.integrity",
    "evolution.governance",
    "evolution.platform",
)


def modules_after_importing(*modules: str) -> list[str]:
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_importing_the_workflows_loads_no_sqlalchemy_numpy_cloud_clients_or_registry():
    loaded = modules_after_importing(
        "workflows.retraining", "workflows.drift_scan", "workflows.gc", "workflows.escalations"
    )
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    rooms = sorted(m for m in loaded if m.startswith(ROOMS_OUTSIDE_THE_BOUNDARY))
    assert heavy == [], f"the workflows pull in {heavy}"
    assert rooms == [], f"the workflows pull in {rooms}"
    assert "evolution.contracts" in loaded
