"""Tiny trainers that follow (or break) the training contract, written into a test's directory as real scripts.

Each is a plain Python file run by the local backend as a command trainer: it reads ``$EVOLUTION_INPUT_DIR`` and
writes into ``$EVOLUTION_OUTPUT_DIR``, importing nothing of the project (numpy, pyarrow and onnx only). The ONNX
models are built node by node with ``onnx.helper``, which is fast and writes the same bytes for the same fit.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

from evolution.registry.model_definitions import ModelDefinition
from evolution.security import Principal, Role

# Numeric features every synthetic event carries (the scenario's generator).
FEATURES = ["rain_mm", "temp_mean_c", "gdd", "soil_ph", "ndvi_peak", "nitrogen_kg_ha"]
ADMIN = Principal.for_tenant("root", Role.ADMIN, "*")

# The head of every ONNX-writing trainer: its directories, config and rows, and a helper that saves a graph.
PROLOGUE = """
import json, os, sys
import numpy as np
import onnx
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

INPUT, OUTPUT = os.environ["EVOLUTION_INPUT_DIR"], os.environ["EVOLUTION_OUTPUT_DIR"]
CONFIG = json.load(open(os.path.join(INPUT, "config.json")))
TABLE = pq.read_table(os.path.join(INPUT, "snapshot.parquet"))
FEATURES = [f["name"] for f in CONFIG["features"]]
print(f"read {TABLE.num_rows} rows, seed {os.environ['EVOLUTION_SEED']}", flush=True)


def save(nodes, inputs, output_shape, initializers=()):
    graph = helper.make_graph(
        nodes,
        "trainer",
        [helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, 1]) for name in inputs],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, output_shape)],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    onnx.save(model, os.path.join(OUTPUT, "model.onnx"))
"""

# Least squares on the features (missing values imputed with the training means): deterministic, and a fair model.
LINEAR = """
x = np.column_stack([np.asarray(TABLE[f].to_numpy(zero_copy_only=False), dtype=np.float64) for f in FEATURES])
means = np.nanmean(x, axis=0)
x = np.where(np.isnan(x), means, x)
y = np.asarray(TABLE[CONFIG["target"]].to_numpy(), dtype=np.float64)
coef, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y * SCALE, rcond=None)
nodes, parts, inits = [], [], []
for i, name in enumerate(FEATURES):
    nodes.append(helper.make_node("IsNaN", [name], [f"nan_{i}"]))
    nodes.append(helper.make_node("Where", [f"nan_{i}", f"mean_{i}", name], [f"x_{i}"]))
    inits.append(numpy_helper.from_array(np.array([[means[i]]]), f"mean_{i}"))
    parts.append(f"x_{i}")
nodes += [
    helper.make_node("Concat", parts, ["x"], axis=1),
    helper.make_node("MatMul", ["x", "w"], ["xw"]),
    helper.make_node("Add", ["xw", "b"], ["y"]),
]
inits += [numpy_helper.from_array(coef[:-1].reshape(-1, 1), "w"), numpy_helper.from_array(coef[-1:], "b")]
save(nodes, FEATURES, [None, 1], inits)
json.dump({"rows": TABLE.num_rows, "coef_norm": float(np.linalg.norm(coef))}, open(os.path.join(OUTPUT, "metrics.json"), "w"))
print("wrote model.onnx and metrics.json")
"""

BODIES: dict[str, str] = {
    "linear": "SCALE = 1.0\n" + LINEAR,
    # Reads a knob file that is not one of its listed code files: its output can change while its code does not.
    "knob_linear": "SCALE = float(open(KNOB_FILE).read())\n" + LINEAR,
    "crash": """
for step in range(30):
    print(f"epoch {step}: loss {1.0 / (step + 1):.4f}")
print("Traceback (most recent call last):\\nValueError: the learning rate exploded", file=sys.stderr)
sys.exit(3)
""",
    "sleeps": """
import time
print("starting a very long fit", flush=True)
time.sleep(120)
""",
    "hungry": """
print("allocating 2 GiB", flush=True)
hoard = bytearray(2 << 30)
print("never reached")
""",
    "writes_nothing": """
print("all done (but nothing saved)")
""",
    "not_onnx": """
with open(os.path.join(OUTPUT, "model.onnx"), "wb") as out:
    out.write(b"this is a pickle, honestly" * 10)
""",
    "wrong_inputs": """
nodes = [helper.make_node("Identity", ["rainfall"], ["y"])]
save(nodes, ["rainfall"], [None, 1])
""",
    "predicts_nan": """
nodes = [helper.make_node("Concat", FEATURES, ["x"], axis=1),
         helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
         helper.make_node("Mul", ["s", "nan"], ["y"])]
save(nodes, FEATURES, [None, 1], [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
                                   numpy_helper.from_array(np.array([np.nan]), "nan")])
""",
    "wrong_shape": """
nodes = [helper.make_node("Concat", FEATURES[:2], ["y"], axis=1)]
save(nodes, FEATURES, [None, 2])
""",
    "too_big": """
with open(os.path.join(OUTPUT, "model.onnx"), "wb") as out:
    out.write(os.urandom(3 * 1024 * 1024))
""",
    "symlink_out": """
os.symlink(SECRET, os.path.join(OUTPUT, "model.onnx"))
print("linked model.onnx to a file outside the output directory")
""",
}


def write_trainer(directory: Path, kind: str, **constants: Any) -> Path:
    """The trainer script ``kind`` in ``directory`` (a module-level constant per keyword, e.g. KNOB_FILE)."""
    directory.mkdir(parents=True, exist_ok=True)
    head = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    needs_onnx = kind not in ("crash", "sleeps", "hungry", "writes_nothing")
    prologue = PROLOGUE if needs_onnx else "import os, sys\nOUTPUT = os.environ['EVOLUTION_OUTPUT_DIR']\n"
    path = directory / f"{kind}_trainer.py"
    path.write_text(textwrap.dedent(prologue) + head + textwrap.dedent(BODIES[kind]))
    return path


def command_definition(script: Path, **overrides: Any) -> ModelDefinition:
    """A model definition whose trainer runs ``script`` with this interpreter, the script listed as its code."""
    trainer: dict[str, Any] = {
        "kind": "command",
        "argv": [sys.executable, str(script)],
        "code_files": [str(script)],
    }
    trainer.update(overrides.pop("trainer", {}))
    return ModelDefinition.parse(
        {"features": [{"name": f} for f in FEATURES], "trainer": trainer, **overrides}
    )
