"""`evolution demo --byo`: the demo tenant brings its own model, the example trainer of examples/sklearn_pipeline.

The trainer ships inside the package as ``evolution/demo/sklearn_trainer.py`` (so an installed wheel has it too);
``examples/sklearn_pipeline/train.py`` in the repository is a link to that very file. The demo defines it as the
tenant's *command* trainer, run by the local compute backend with the demo's own Python interpreter, which must
therefore have the example's requirements (examples/sklearn_pipeline/requirements.txt).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from evolution.demo.synthetic import CATEGORICAL, FEATURES, TARGET
from evolution.errors import EvolutionError
from evolution.registry.model_definitions import CommandTrainer, FeatureSpec, ModelDefinition

TRAINER_FILE = Path(__file__).resolve().with_name("sklearn_trainer.py")
EXAMPLE = "examples/sklearn_pipeline"
# Import name -> the distribution that provides it (what pip installs).
REQUIREMENTS: dict[str, str] = {
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "numpy": "numpy",
    "sklearn": "scikit-learn",
    "skl2onnx": "skl2onnx",
}
HYPERPARAMETERS: dict[str, Any] = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1}
TRAINER_TIMEOUT_S = 600.0


class ExampleUnavailable(EvolutionError):
    """The example trainer cannot run here (its file or its requirements are missing)."""

    error_type = "ExampleUnavailable"


def check_example(python: str = sys.executable) -> Path:
    """The example trainer's file, or ExampleUnavailable saying what to install (checked before anything starts)."""
    if not TRAINER_FILE.is_file():
        raise ExampleUnavailable(f"the example trainer {TRAINER_FILE} is missing from this installation")
    missing = [dist for module, dist in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ExampleUnavailable(
            f"--byo runs the example trainer ({EXAMPLE}) with this Python ({python}), which lacks "
            f"{', '.join(missing)}: pip install 'controlled-evolution[examples]' "
            f"(or pip install -r {EXAMPLE}/requirements.txt)"
        )
    return TRAINER_FILE


def example_definition(python: str = sys.executable) -> ModelDefinition:
    """The demo tenant's model with the example as its command trainer: the demo's features and target, the
    trainer's file named in the command and listed as its code (its digest goes into every version's lineage)."""
    trainer = str(TRAINER_FILE)
    return ModelDefinition(
        features=[
            FeatureSpec(name=name, type="categorical" if name in CATEGORICAL else "numeric")
            for name in FEATURES
        ],
        target=TARGET,
        loss="mae",
        hyperparameters=HYPERPARAMETERS,
        trainer=CommandTrainer(
            argv=[python, trainer, "{input}", "{output}"], code_files=[trainer], timeout_s=TRAINER_TIMEOUT_S
        ),
    )
