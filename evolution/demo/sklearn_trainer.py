#!/usr/bin/env python3
"""A tenant's own trainer: a scikit-learn pipeline exported to ONNX, following the training contract
``evolution-training/1`` (docs/bring-your-own-model.md) and nothing else.

It needs none of Controlled Evolution's code, no network and no credentials: only pandas, pyarrow, numpy,
scikit-learn and skl2onnx (examples/sklearn_pipeline/requirements.txt). Copy it and make it yours.

    python train.py INPUT_DIR OUTPUT_DIR      # or with no arguments: $EVOLUTION_INPUT_DIR, $EVOLUTION_OUTPUT_DIR

It reads, from the input directory:

* ``config.json``: the declared features (numeric or categorical), the target, the hyperparameters and the seed;
* ``snapshot.parquet``: the training rows, one column per feature and the target (a missing value is null);
* ``schema.json``: the columns and their types, checked against the config.

It fits a pipeline: numeric features imputed with their median, categorical ones one-hot encoded (a category it
never saw encodes as all zeros), then a gradient boosting regressor whose hyperparameters come from the config's
``hyperparameters`` (any GradientBoostingRegressor parameter; unknown names are refused), seeded by its ``seed``.

It writes, into the output directory:

* ``model.onnx``: the whole pipeline, one input per feature named as the feature, shape ``[N, 1]``, ``float`` for a
  numeric feature and ``string`` for a categorical one; one output, the prediction. Serving sends NaN for a missing
  number and "" for a missing category, and the graph handles both as the pipeline did in training;
* ``metrics.json``: the training MAE, the rows and the hyperparameters used.

Exit codes: 0 done; 2 the input is not what the contract promises (the message says what); 1 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

CONTRACT = "evolution-training/1"
DEFAULT_HYPERPARAMETERS: dict[str, Any] = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1}
ONNX_OPSET = 17
USAGE = (
    "usage: python train.py [INPUT_DIR OUTPUT_DIR]  (default: $EVOLUTION_INPUT_DIR and $EVOLUTION_OUTPUT_DIR)"
)


class BadInput(Exception):
    """The input directory breaks the contract: exit 2 with this message."""


def log(message: str) -> None:
    print(f"train.py: {message}", flush=True)


def directories(argv: list[str]) -> tuple[Path, Path]:
    """The input and output directories: the two arguments, or the contract's variables."""
    if len(argv) == 2:
        return Path(argv[0]), Path(argv[1])
    if argv:
        raise BadInput(f"expected two arguments, got {len(argv)}\n{USAGE}")
    try:
        return Path(os.environ["EVOLUTION_INPUT_DIR"]), Path(os.environ["EVOLUTION_OUTPUT_DIR"])
    except KeyError as missing:
        raise BadInput(f"{missing.args[0]} is not set and no directories were given\n{USAGE}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path.name} is missing from the input directory {path.parent}") from None
    except json.JSONDecodeError as error:
        raise BadInput(f"{path.name} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path.name} is not a JSON object")
    return value


def read_inputs(source: Path) -> tuple[dict[str, Any], list[str], list[str], Any]:
    """The config, the numeric and the categorical feature names (in declared order), and the rows."""
    config = read_json(source / "config.json")
    if config.get("contract") != CONTRACT:
        raise BadInput(
            f"config.json is for contract {config.get('contract')!r}; this trainer follows {CONTRACT}"
        )
    schema = read_json(source / "schema.json")
    features = config.get("features") or []
    if not features:
        raise BadInput("config.json declares no features")
    numeric = [f["name"] for f in features if f["type"] == "numeric"]
    categorical = [f["name"] for f in features if f["type"] == "categorical"]
    declared = {c["name"]: c["type"] for c in schema.get("columns", [])}
    for feature in features:
        if declared.get(feature["name"]) != feature["type"]:
            raise BadInput(f"schema.json does not list {feature['name']} as {feature['type']}")
    if not (source / "snapshot.parquet").is_file():
        raise BadInput(f"snapshot.parquet is missing from the input directory {source}")
    import pyarrow.parquet as pq  # imported once the cheap checks passed: a bad input fails fast

    frame = pq.read_table(source / "snapshot.parquet").to_pandas()
    absent = [name for name in [*numeric, *categorical, config["target"]] if name not in frame.columns]
    if absent:
        raise BadInput(f"snapshot.parquet has no column {', '.join(absent)}")
    if len(frame) == 0:
        raise BadInput("snapshot.parquet has no rows to train on")
    for name in categorical:
        frame[name] = frame[name].fillna("").astype(str)  # serving sends "" for a missing category
    for name in numeric:
        frame[name] = frame[name].astype("float64")  # null -> NaN, which the imputer fills
    return config, numeric, categorical, frame


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The regressor's parameters: the defaults, overridden by the config's, the seed last."""
    from sklearn.ensemble import GradientBoostingRegressor

    given = config.get("hyperparameters") or {}
    known = set(GradientBoostingRegressor().get_params()) - {"random_state"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise BadInput(
            f"unknown hyperparameter {', '.join(unknown)}; GradientBoostingRegressor takes {', '.join(sorted(known))}"
        )
    return {**DEFAULT_HYPERPARAMETERS, **given, "random_state": int(config["seed"])}


def train(source: Path, target: Path) -> dict[str, Any]:
    """Fit the pipeline on ``source``'s rows and write ``model.onnx`` and ``metrics.json`` into ``target``."""
    started = time.monotonic()
    config, numeric, categorical, frame = read_inputs(source)
    params = hyperparameters(config)

    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    log(
        f"{len(frame)} rows, {len(numeric)} numeric and {len(categorical)} categorical features, "
        f"target {config['target']}, seed {params['random_state']}"
    )
    columns = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    try:
        model = Pipeline([("columns", columns), ("regressor", GradientBoostingRegressor(**params))])
        x, y = frame[numeric + categorical], frame[config["target"]].to_numpy(dtype=np.float64)
        model.fit(x, y)
    except (TypeError, ValueError) as error:
        raise BadInput(f"cannot fit with hyperparameters {params}: {error}") from None
    mae = float(np.mean(np.abs(model.predict(x) - y)))
    log(f"fitted GradientBoostingRegressor({_shown(params)}): training MAE {mae:.4f}")

    # One ONNX input per feature, named as the feature, [N, 1]: what the contract and serving expect.
    inputs = [(name, FloatTensorType([None, 1])) for name in numeric]
    inputs += [(name, StringTensorType([None, 1])) for name in categorical]
    onnx_model = convert_sklearn(
        model, name=f"{config['model_name']}-pipeline", initial_types=inputs, target_opset=ONNX_OPSET
    )
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.onnx").write_bytes(onnx_model.SerializeToString())
    metrics = {
        "train_mae": round(mae, 6),
        "rows": len(frame),
        "regressor": "sklearn.ensemble.GradientBoostingRegressor",
        "hyperparameters": params,
    }
    (target / "metrics.json").write_text(json.dumps(metrics, sort_keys=True), encoding="utf-8")
    size = (target / "model.onnx").stat().st_size
    log(
        f"wrote model.onnx ({size / 1024:.0f} KiB, {len(inputs)} inputs) and metrics.json to {target} "
        f"in {time.monotonic() - started:.1f} s"
    )
    return metrics


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))


def main(argv: list[str]) -> int:
    try:
        source, target = directories(argv)
        train(source, target)
    except BadInput as error:
        print(f"train.py: {error}", file=sys.stderr, flush=True)
        return 2
    except ImportError as error:
        print(
            f"train.py: {error.name or error} is not installed for {sys.executable}: "
            "pip install -r requirements.txt (pandas, pyarrow, numpy, scikit-learn, skl2onnx)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
