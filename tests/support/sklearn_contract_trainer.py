#!/usr/bin/env python3
"""The example trainer (examples/sklearn_pipeline/train.py: a scikit-learn pipeline exported with skl2onnx, following
the training contract ``evolution-training/1`` and nothing else) with a test's hooks around it. The tests run it as a
tenant's image (the fake kubelet maps the image to a PATH holding this file).

It prints what it was given (argv, the contract's variables) as one JSON line, so a test can see exactly what
reached the container, then trains with the example on ``$EVOLUTION_INPUT_DIR`` into ``$EVOLUTION_OUTPUT_DIR``
(other arguments are printed and ignored). Flags a test uses to make it misbehave instead: ``--fail MESSAGE``
(print it, exit 3), ``--link-to PATH`` (leave ``model.onnx`` as a symbolic link to PATH instead of a model).

Like the example, it imports no code of the project: the example is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sklearn_pipeline" / "train.py"


def main(argv: list[str]) -> int:
    contract_env = {k: v for k, v in os.environ.items() if k.startswith("EVOLUTION_")}
    print(json.dumps({"argv": argv, "env": contract_env}, sort_keys=True), flush=True)
    if "--fail" in argv:
        print(f"trainer: giving up: {argv[argv.index('--fail') + 1]}", file=sys.stderr, flush=True)
        return 3
    if "--link-to" in argv:
        target = Path(os.environ["EVOLUTION_OUTPUT_DIR"])
        (target / "model.onnx").symlink_to(argv[argv.index("--link-to") + 1])
        return 0
    spec = importlib.util.spec_from_file_location("sklearn_pipeline_train", EXAMPLE)
    assert spec is not None and spec.loader is not None, EXAMPLE
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    code: int = example.main([])  # the directories from the contract's variables
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
