#!/usr/bin/env python3
"""A scikit-learn trainer that follows the training contract ``evolution-training/1`` and nothing else: no code of
ours, no network, no credentials. The tests run it as a tenant's image (the fake kubelet maps the image to a PATH
holding this file) and it could as well run as a command trainer.

It reads ``$EVOLUTION_INPUT_DIR`` (``snapshot.parquet``, ``schema.json``, ``config.json``), fits a scikit-learn
pipeline (numeric features imputed, categorical ones one-hot encoded, a ridge regression) with the seed of
config.json, exports it with skl2onnx, one input per feature named as the feature, and writes ``model.onnx`` and
``metrics.json`` into ``$EVOLUTION_OUTPUT_DIR``. It prints what it was given (argv, the contract's variables) as
one JSON line, so a test can see exactly what reached the container.

Flags a test uses to make it misbehave: ``--fail MESSAGE`` (print it, exit 3), ``--link-to PATH`` (leave
``model.onnx`` as a symbolic link to PATH instead of a model). Other arguments are printed and ignored.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    contract_env = {k: v for k, v in os.environ.items() if k.startswith("EVOLUTION_")}
    print(json.dumps({"argv": argv, "env": contract_env}, sort_keys=True), flush=True)
    if "--fail" in argv:
        print(f"trainer: giving up: {argv[argv.index('--fail') + 1]}", file=sys.stderr, flush=True)
        return 3
    source, target = Path(os.environ["EVOLUTION_INPUT_DIR"]), Path(os.environ["EVOLUTION_OUTPUT_DIR"])
    if "--link-to" in argv:
        (target / "model.onnx").symlink_to(argv[argv.index("--link-to") + 1])
        return 0

    import numpy as np  # imported after the checks above, so a failing run stays fast
    import pyarrow.parquet as pq
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    config = json.loads((source / "config.json").read_text())
    schema = json.loads((source / "schema.json").read_text())
    features = [c for c in schema["columns"] if c["type"] != "target"]
    numeric = [c["name"] for c in features if c["type"] == "numeric"]
    categorical = [c["name"] for c in features if c["type"] == "categorical"]
    frame = pq.read_table(source / "snapshot.parquet").to_pandas()
    for name in categorical:
        frame[name] = frame[name].fillna("")  # the contract: a missing category arrives as ""
    np.random.seed(config["seed"])
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numeric", SimpleImputer(strategy="mean"), numeric),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                    ]
                ),
            ),
            ("regression", Ridge(alpha=1.0, random_state=config["seed"])),
        ]
    )
    y = frame[config["target"]].to_numpy()
    model.fit(frame[numeric + categorical], y)
    inputs = [(n, FloatTensorType([None, 1])) for n in numeric] + [
        (n, StringTensorType([None, 1])) for n in categorical
    ]
    onnx_model = convert_sklearn(model, initial_types=inputs, target_opset=17)
    (target / "model.onnx").write_bytes(onnx_model.SerializeToString())
    mae = float(np.mean(np.abs(model.predict(frame[numeric + categorical]) - y)))
    (target / "metrics.json").write_text(json.dumps({"train_mae": mae, "rows": len(frame)}))
    print(f"trainer: fitted {len(frame)} rows, train MAE {mae:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
