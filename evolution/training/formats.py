"""The model-format port: what serving, validation, the drift scan and the dashboard need of a model, in two formats.

* ``builtin``: the built-in trainer's :class:`~evolution.training.trainer.TrainedModel` (``model.json`` and
  ``model.pkl``), which satisfies :class:`ServedModel` as it is;
* ``onnx``: a model written by a trainer that follows the training contract (``docs/bring-your-own-model.md``),
  ``model.onnx`` beside ``onnx_card.json``, served through onnxruntime by :class:`OnnxModel`.

Loading an ONNX model runs no code of the model's author: onnxruntime interprets a graph of its own operators, and no
custom-operator library is ever registered. What the graph could still reach is a file: a tensor may keep its data in
an "external" file named by a path, which onnxruntime would read from wherever that path points. So every ONNX model
is refused if any of its tensors is external, both when it is checked for registration and each time it is loaded.

:func:`check_onnx_model` is the gate a trainer's output passes before it is signed; :func:`load_served_model` picks
the format from the (verified) files of a version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation, InvalidInput, ModelFailed, ModelRefused
from evolution.registry.model_definitions import FeatureSpec, ModelDefinition
from evolution.training.columns import Columns, Rows, as_columns, data_length
from evolution.training.contract import HOLDOUT_KEY, OUTCOME_COLUMN, HoldoutSplit
from evolution.training.trainer import MODEL_FILES, TrainingConfig, load_model

if TYPE_CHECKING:
    import onnx

ModelFormat = Literal["builtin", "onnx"]

ONNX_MODEL: Final = "model.onnx"
ONNX_CARD: Final = "onnx_card.json"
ONNX_CARD_FORMAT: Final = "evolution.onnx-card/1"

PROBE_ROWS: Final = 1000
"""Held-out rows the registration check predicts at most (the first ones): enough to meet every category and
missing value the model will see, few enough to keep the check well under a second."""

NUMERIC_INPUTS: Final[dict[str, type[np.floating[Any]]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}
STRING_INPUT: Final = "tensor(string)"
NUMERIC_OUTPUTS: Final = frozenset(
    f"tensor({t})"
    for t in (
        "float",
        "double",
        "float16",
        "bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    )
)
MIB: Final = 1024 * 1024


class ServedModel(Protocol):
    """What every consumer of a model needs, whatever its format.

    ``predict`` takes rows or columns holding any columns (ids, times and the target are ignored); a feature absent
    or None is missing, and it returns one float64 prediction per row, shape ``(n,)``.
    """

    @property
    def format(self) -> ModelFormat: ...

    @property
    def features(self) -> list[str]: ...

    @property
    def categorical(self) -> list[str]: ...

    @property
    def target(self) -> str: ...

    def predict(self, data: Rows | Columns) -> np.ndarray: ...


class OnnxCard(BaseModel):
    """``onnx_card.json``: what the definition declared, signed beside ``model.onnx`` (which cannot say it itself:
    an ONNX input of type string could be any categorical feature, and the model does not name its target).

    ``target`` is the name the trainer saw the outcome under, kept for the record; the system itself keeps every
    outcome in the snapshot's ``actual`` column, which is what the served model's :attr:`OnnxModel.target` names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["evolution.onnx-card/1"] = ONNX_CARD_FORMAT
    features: list[FeatureSpec] = Field(min_length=1, max_length=500)
    target: str = Field(min_length=1, max_length=100)


def onnx_card(definition: ModelDefinition) -> bytes:
    """The bytes of ``onnx_card.json`` for a model trained under ``definition`` (canonical JSON, so reproducible)."""
    if not definition.features:
        raise InvalidInput("an ONNX model's card needs the definition's features listed")
    card = OnnxCard(features=list(definition.features), target=definition.target)
    return canonical_json(card.model_dump(mode="json"))


def read_onnx_card(data: bytes) -> OnnxCard:
    try:
        return OnnxCard.model_validate(json.loads(data))
    except (ValueError, ValidationError) as error:
        raise IntegrityViolation(f"{ONNX_CARD} is malformed: {str(error).splitlines()[0][:200]}") from None


class OnnxModel:
    """An ONNX model served through onnxruntime (one thread, CPU), fed one input per feature per the contract.

    Raises :class:`ModelRefused` when the bytes do not parse, reference external data, do not load, or when the
    model's inputs and first output do not fit ``features``.
    """

    format: Literal["onnx"] = "onnx"

    def __init__(
        self, model_bytes: bytes, features: Sequence[FeatureSpec], target: str = OUTCOME_COLUMN
    ) -> None:
        if not features:
            raise InvalidInput("an ONNX model needs its features declared")
        refuse_external_data(_parse(model_bytes))
        self._session = _session(model_bytes)
        self._specs = list(features)
        self._target = target
        # name -> (numpy dtype or None for text, rank): how predict builds each input, read once from the model
        self._inputs = _checked_inputs(self._session, self._specs)
        first = _checked_output(self._session)
        self.output_name, self.output_type = str(first.name), str(first.type)
        # each input's type as the model declares it, e.g. {"rain_mm": "tensor(float)"}: the check reports them
        self.input_types = {i.name: str(i.type) for i in self._session.get_inputs()}

    @property
    def features(self) -> list[str]:
        return [f.name for f in self._specs]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self._specs if f.type == "categorical"]

    @property
    def target(self) -> str:
        """The column of held-out rows that holds the truth: ``actual``, as for the built-in format's models, so a
        champion of one format and a candidate of the other are scored on the same column."""
        return self._target

    def predict(self, data: Rows | Columns) -> np.ndarray:
        """One float64 prediction per row; ModelFailed if onnxruntime raises or the output is not one per row."""
        n = data_length(data)
        if n == 0:
            return np.empty(0, dtype=np.float64)
        raw = self.run(data)
        if raw.size != n:
            raise ModelFailed(
                f"the ONNX model gave {raw.size} values (shape {list(raw.shape)}) for {n} rows; "
                "the contract asks for one prediction per row"
            )
        return raw.reshape(n).astype(np.float64)

    def run(self, data: Rows | Columns) -> np.ndarray:
        """The first output as onnxruntime returns it (for the registration check, which judges its shape)."""
        feeds = self.feeds(data)
        try:
            outputs = self._session.run([self.output_name], feeds)
        except Exception as error:  # onnxruntime raises bare Exception subclasses (Fail, InvalidArgument…)
            raise ModelFailed(f"the ONNX model failed to predict: {_first_line(error)}") from None
        return np.asarray(outputs[0])

    def feeds(self, data: Rows | Columns) -> dict[str, np.ndarray]:
        """One array per feature: numbers as the model declares them (NaN for missing, and for ±inf as the built-in
        format treats it), categories as text ("" for missing), shaped ``[N, 1]`` or ``[N]`` as declared."""
        n = data_length(data)
        columns = as_columns(data, self.features, self.categorical)
        feeds: dict[str, np.ndarray] = {}
        for name, (dtype, rank) in self._inputs.items():
            col = columns.get(name)
            if dtype is None:
                text = np.full(n, "", dtype=object)
                if col is not None:
                    present = np.fromiter((v is not None for v in col), dtype=bool, count=n)
                    text[present] = [str(v) for v in col[present]]
                value = text
            else:
                with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, then NaN
                    number = np.full(n, np.nan, dtype=dtype) if col is None else col.astype(dtype)
                number[~np.isfinite(number)] = np.nan
                value = number
            feeds[name] = value.reshape(n, 1) if rank == 2 else value
        return feeds


def load_served_model(files: Mapping[str, bytes]) -> ServedModel:
    """The model in a version's files, by its format: ``model.onnx`` with its card, or ``model.json`` + ``model.pkl``.

    SECURITY: the built-in format unpickles. The caller MUST have verified the signed manifest (as
    :class:`~evolution.training.loader.ModelLoader` does) before calling this.
    """
    onnx_files = {ONNX_MODEL, ONNX_CARD} & set(files)
    builtin_files = set(MODEL_FILES) & set(files)
    if onnx_files and builtin_files:
        raise InvalidInput(
            f"model files of two formats: {sorted(onnx_files | builtin_files)}; a version has one format"
        )
    if onnx_files:
        if onnx_files != {ONNX_MODEL, ONNX_CARD}:
            missing = sorted({ONNX_MODEL, ONNX_CARD} - onnx_files)
            raise InvalidInput(f"ONNX model files missing: {missing}")
        card = read_onnx_card(files[ONNX_CARD])
        return OnnxModel(files[ONNX_MODEL], card.features)
    return load_model(files)


def model_card(files: Mapping[str, bytes]) -> dict[str, Any]:
    """The version's descriptive JSON: ``model.json`` (built-in) or ``onnx_card.json``; {} when there is none."""
    for name in (MODEL_FILES[0], ONNX_CARD):
        if name in files:
            card = json.loads(files[name])
            return card if isinstance(card, dict) else {}
    return {}


def holdout_split(training_config: Mapping[str, Any]) -> HoldoutSplit:
    """The held-out split a version was trained with, from its signed manifest's ``training_config``, either format.

    The split belongs to the run, not to the model: the training contract's runner records it under
    ``"holdout"``; the built-in trainer's config carries it as ``holdout_fraction`` and ``split_keys``.
    """
    try:
        if HOLDOUT_KEY in training_config:
            return HoldoutSplit.model_validate(training_config[HOLDOUT_KEY])
        config = TrainingConfig.model_validate(training_config)
    except ValidationError as error:
        raise IntegrityViolation(
            f"the manifest's training_config names no held-out split: {str(error).splitlines()[0][:200]}"
        ) from None
    return HoldoutSplit(fraction=config.holdout_fraction, split_keys=list(config.split_keys))


class OnnxCheck(BaseModel):
    """What the registration check of an ONNX model found: it passed, on these figures."""

    model_config = ConfigDict(frozen=True)

    size_bytes: int
    inputs: dict[str, str]
    """Each feature's input type as the model declares it, e.g. ``{"rain_mm": "tensor(float)"}``."""
    output: str
    output_type: str
    probe_rows: int
    probe_mean: float


def check_onnx_model(model_dir: Path, definition: ModelDefinition, probe: Columns) -> OnnxCheck:
    """The gate before an ONNX model is signed and registered; ModelRefused naming the first problem found.

    In order: ``model.onnx`` is a file; it is within ``definition.max_model_mb``; it parses; no tensor keeps its
    data outside the file; onnxruntime loads it; its inputs are exactly the features, each of the feature's type
    and of shape ``[N, 1]`` or ``[N]``; its first output is numeric; and the first :data:`PROBE_ROWS` rows of
    ``probe`` (held-out rows, as columns) give one finite prediction each. A symbolic link in ``model_dir`` is the
    training runner's check, done before this one.
    """
    path = Path(model_dir) / ONNX_MODEL
    if not path.is_file():
        present = sorted(p.name for p in Path(model_dir).iterdir()) if Path(model_dir).is_dir() else []
        raise ModelRefused(
            f"the trainer wrote no {ONNX_MODEL} (its output directory holds {present or 'nothing'})"
        )
    size = path.stat().st_size
    limit = definition.max_model_mb * MIB
    if size > limit:  # judged before reading: a model over the limit is not read into memory at all
        raise ModelRefused(
            f"{ONNX_MODEL} is {size / MIB:.1f} MB, over the definition's limit of {definition.max_model_mb} MB"
        )
    n = data_length(probe)
    if n == 0:
        raise InvalidInput("no held-out rows to probe the model with")
    model = OnnxModel(path.read_bytes(), definition.features)
    rows = {name: col[:PROBE_ROWS] for name, col in probe.items()}
    n = min(n, PROBE_ROWS)
    try:
        raw = model.run(rows)
    except ModelFailed as error:
        raise ModelRefused(f"{ONNX_MODEL} failed on the probe batch of {n} held-out rows: {error}") from None
    if raw.shape not in ((n,), (n, 1)):
        raise ModelRefused(
            f"{ONNX_MODEL}'s first output has shape {list(raw.shape)} for a probe batch of {n} rows; "
            f"the contract asks for [{n}] or [{n}, 1], one prediction per row"
        )
    predictions = raw.reshape(n).astype(np.float64)
    bad = ~np.isfinite(predictions)
    if bad.any():
        raise ModelRefused(
            f"{ONNX_MODEL} gave {int(bad.sum())} non-finite predictions (NaN or ±inf) on a probe batch of {n} "
            f"held-out rows (the first at row {int(np.argmax(bad))}); a missing value arrives as NaN or '' and "
            "the model must still predict"
        )
    return OnnxCheck(
        size_bytes=size,
        inputs=model.input_types,
        output=model.output_name,
        output_type=model.output_type,
        probe_rows=n,
        probe_mean=float(predictions.mean()),
    )


def refuse_external_data(model: onnx.ModelProto) -> None:
    """ModelRefused if any tensor of the model (initializers, constants, subgraphs, functions) is stored outside it."""
    from onnx import TensorProto

    for where, tensor in _tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelRefused(
                f"{ONNX_MODEL} keeps tensor {tensor.name or where!r} in an external file ({location!r}): data "
                "outside its directory is refused; save the model with every tensor inside the file"
            )


def _parse(model_bytes: bytes) -> onnx.ModelProto:
    import onnx  # about 0.8 s to import: paid by the processes that load an ONNX model, not by all that import this

    try:
        # From bytes, onnx never follows external data references: they are only read, and judged, here.
        return onnx.load_model_from_string(model_bytes)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelRefused(
            f"{ONNX_MODEL} cannot be loaded: it is not an ONNX model ({_first_line(error)})"
        ) from None


def _session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread: serving answers many small batches from several request threads, and waking a pool of threads for
    # each costs more than the work (the built-in format runs single-threaded for the same reason).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: a converter's harmless warnings would flood the logs
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises bare Exception subclasses (InvalidGraph, Fail…)
        raise ModelRefused(f"{ONNX_MODEL} cannot be loaded by onnxruntime: {_first_line(error)}") from None


def _checked_inputs(
    session: ort.InferenceSession, specs: Sequence[FeatureSpec]
) -> dict[str, tuple[type[np.floating[Any]] | None, int]]:
    declared = {i.name: i for i in session.get_inputs()}
    wanted = [f.name for f in specs]
    missing = [name for name in wanted if name not in declared]
    extra = sorted(set(declared) - set(wanted))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no input for the feature(s) {missing}")
        if extra:
            parts.append(f"input(s) {extra} that are not features")
        raise ModelRefused(
            f"{ONNX_MODEL}'s inputs must be exactly the features, named as them; it has "
            f"{' and '.join(parts)} (its inputs: {sorted(declared)})"
        )
    inputs: dict[str, tuple[type[np.floating[Any]] | None, int]] = {}
    for spec in specs:
        arg = declared[spec.name]
        if spec.type == "numeric" and arg.type not in NUMERIC_INPUTS:
            raise ModelRefused(
                f"{ONNX_MODEL}'s input {spec.name!r} is {arg.type}, but the feature is numeric: "
                "tensor(float) or tensor(double)"
            )
        if spec.type == "categorical" and arg.type != STRING_INPUT:
            raise ModelRefused(
                f"{ONNX_MODEL}'s input {spec.name!r} is {arg.type}, but the feature is categorical: "
                f"{STRING_INPUT}"
            )
        shape = list(arg.shape or [])
        if len(shape) not in (1, 2) or (len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1):
            raise ModelRefused(
                f"{ONNX_MODEL}'s input {spec.name!r} has shape {shape}; the contract takes [N, 1] or [N]"
            )
        inputs[spec.name] = (NUMERIC_INPUTS.get(arg.type), len(shape))
    return inputs


def _checked_output(session: ort.InferenceSession) -> Any:
    outputs = session.get_outputs()
    if not outputs:
        raise ModelRefused(f"{ONNX_MODEL} has no output; the first output is the prediction")
    first = outputs[0]
    if first.type not in NUMERIC_OUTPUTS:
        raise ModelRefused(
            f"{ONNX_MODEL}'s first output {first.name!r} is {first.type}, not a numeric tensor; the first output "
            "is the prediction"
        )
    return first


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node, f"function {function.name}")


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    for tensor in graph.initializer:
        yield f"initializer of {graph.name}", tensor
    for sparse in graph.sparse_initializer:
        yield f"sparse initializer of {graph.name}", sparse.values
        yield f"sparse initializer of {graph.name}", sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node, f"node {node.name or node.op_type}")


def _attribute_tensors(node: onnx.NodeProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield where, attribute.t
        for tensor in attribute.tensors:
            yield where, tensor
        sparse_tensors = [*attribute.sparse_tensors]
        if attribute.HasField("sparse_tensor"):
            sparse_tensors.append(attribute.sparse_tensor)
        for sparse in sparse_tensors:
            yield where, sparse.values
            yield where, sparse.indices
        graphs = [*attribute.graphs]
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            yield from _graph_tensors(graph)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
