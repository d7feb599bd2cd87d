"""The ONNX format of the model-format port: served through onnxruntime, checked before registration, explained.

Every model here is real: a scikit-learn pipeline (median imputation of numbers, one-hot categories, then a
regressor) fitted on the demo's agronomic rows and exported with skl2onnx, one input per feature named as the
feature, as a trainer following ``docs/bring-your-own-model.md`` writes it. The bad models are real too: each breaks
the contract the way a trainer's author could (a renamed input, a numeric feature declared as text, a forgotten
imputer, two targets, a classifier, tensors saved outside the file…).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from evolution.demo.scenario import Scenario
from evolution.errors import IntegrityViolation, ModelFailed, ModelRefused
from evolution.integrity.manifest import build_manifest_from_dir, sign_manifest
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.model_definitions import FeatureSpec, ModelDefinition
from evolution.security import Principal, Role
from evolution.serving.predictor import PredictInstance
from evolution.timeutil import utcnow
from evolution.training.columns import as_columns
from evolution.training.contract import HoldoutSplit
from evolution.training.explain import (
    ESTIMATE_BACKGROUND_ROWS,
    ESTIMATE_MAX_ROWS,
    ESTIMATE_SAMPLES,
    global_importance,
    shap_values,
    waterfall,
)
from evolution.training.formats import (
    ONNX_CARD,
    ONNX_MODEL,
    OnnxModel,
    ServedModel,
    check_onnx_model,
    holdout_split,
    load_served_model,
    onnx_card,
    read_onnx_card,
)
from evolution.training.trainer import TrainedModel, TrainingConfig, train
from evolution.training.validation import validate
from tests.support.models import (
    CATEGORICAL,
    demo_features,
    demo_rows,
    install_model,
    install_onnx_model,
    onnx_definition,
    sklearn_pipeline,
    to_onnx,
    write_onnx_model,
)
from tests.support.scenario import seed_tenant

TENANT = "acme"
ADMIN = Principal.for_tenant("ada", Role.ADMIN, TENANT)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return demo_rows(800, seed=3)


@pytest.fixture(scope="module")
def holdout() -> list[dict[str, Any]]:
    return demo_rows(300, seed=4)


@pytest.fixture(scope="module")
def definition(rows: list[dict[str, Any]]) -> ModelDefinition:
    return onnx_definition(demo_features(rows))


@pytest.fixture(scope="module")
def pipeline(rows: list[dict[str, Any]], definition: ModelDefinition) -> Pipeline:
    return sklearn_pipeline(rows, definition)


@pytest.fixture(scope="module")
def model_bytes(pipeline: Pipeline, definition: ModelDefinition) -> bytes:
    return to_onnx(pipeline, definition)


@pytest.fixture(scope="module")
def onnx_model(model_bytes: bytes, definition: ModelDefinition) -> OnnxModel:
    return OnnxModel(model_bytes, definition.features)


@pytest.fixture(scope="module")
def probe(holdout: list[dict[str, Any]], definition: ModelDefinition) -> dict[str, np.ndarray]:
    """Held-out rows as columns (features and target), as the training runner hands them to the check."""
    names = [f.name for f in definition.features]
    return as_columns(holdout, [*names, "actual"], set(CATEGORICAL))


def frame(rows: list[dict[str, Any]], definition: ModelDefinition) -> pd.DataFrame:
    """What scikit-learn sees for ``rows``: NaN for a missing number, "" for a missing category (the contract)."""
    return pd.DataFrame(
        {
            f.name: [
                ("" if r.get(f.name) is None else str(r[f.name]))
                if f.type == "categorical"
                else (np.nan if r.get(f.name) is None else float(r[f.name]))
                for r in rows
            ]
            for f in definition.features
        }
    )


def model_dir(tmp_path: Path, model: bytes, definition: ModelDefinition) -> Path:
    return write_onnx_model(tmp_path / "out", model, definition)


# ------------------------------------------------------------------------------------------------ serving


def test_onnx_predictions_match_scikit_learn_within_float32_tolerance(
    onnx_model: OnnxModel,
    pipeline: Pipeline,
    holdout: list[dict[str, Any]],
    definition: ModelDefinition,
    rows: list[dict[str, Any]],
) -> None:
    expected = pipeline.predict(frame(holdout, definition))
    served = onnx_model.predict(holdout)
    assert served.dtype == np.float64 and served.shape == (len(holdout),)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-4)

    ridge = sklearn_pipeline(rows, definition, Ridge(alpha=1.0))
    linear = OnnxModel(to_onnx(ridge, definition), definition.features)
    np.testing.assert_allclose(
        linear.predict(holdout), ridge.predict(frame(holdout, definition)), rtol=1e-5, atol=1e-4
    )


def test_missing_and_unseen_values_are_fed_as_the_contract_says_and_predicted_as_scikit_learn_does(
    onnx_model: OnnxModel, pipeline: Pipeline, holdout: list[dict[str, Any]], definition: ModelDefinition
) -> None:
    rows = [dict(r) for r in holdout[:4]]
    rows[0]["rain_mm"] = None  # a missing number: NaN, imputed by the model
    del rows[1]["crop"]  # an absent category: ""
    rows[2]["soil_texture"] = "volcanic"  # never seen in training: ignored by the one-hot encoder
    rows[3]["temp_mean_c"] = float("inf")  # not a number the built-in format would use either: missing
    feeds = onnx_model.feeds(rows)
    assert np.isnan(feeds["rain_mm"][0, 0]) and feeds["rain_mm"].dtype == np.float32
    assert feeds["crop"][1, 0] == "" and feeds["crop"].shape == (4, 1)
    assert np.isnan(feeds["temp_mean_c"][3, 0])
    expected_rows = [dict(r) for r in rows]
    expected_rows[3]["temp_mean_c"] = None
    expected = pipeline.predict(frame(expected_rows, definition))
    np.testing.assert_allclose(onnx_model.predict(rows), expected, rtol=1e-5, atol=1e-4)
    # columns work as rows do, and a feature absent from every row is missing everywhere
    columns = {
        k: v for k, v in as_columns(rows, onnx_model.features, onnx_model.categorical).items() if k != "gdd"
    }
    without = [{k: v for k, v in r.items() if k != "gdd"} for r in rows]
    np.testing.assert_array_equal(onnx_model.predict(columns), onnx_model.predict(without))
    assert onnx_model.predict([]).shape == (0,)


def test_both_formats_satisfy_the_port(onnx_model: OnnxModel, rows: list[dict[str, Any]]) -> None:
    builtin = train(rows, builtin_config(rows), seed=1)
    served: list[ServedModel] = [builtin, onnx_model]
    assert [m.format for m in served] == ["builtin", "onnx"]
    for model in served:
        assert set(model.categorical) == set(CATEGORICAL) and model.target == "actual"
        assert model.predict(rows[:5]).shape == (5,)


def test_files_choose_the_format_and_the_card_carries_the_declared_features(
    model_bytes: bytes, definition: ModelDefinition, rows: list[dict[str, Any]]
) -> None:
    card = onnx_card(definition)
    assert read_onnx_card(card).features == definition.features
    loaded = load_served_model({ONNX_MODEL: model_bytes, ONNX_CARD: card})
    assert loaded.format == "onnx" and loaded.features == [f.name for f in definition.features]
    # whatever the trainer called the outcome, the served model is scored on the system's `actual` column
    renamed = definition.model_copy(update={"target": "yield_t_ha"})
    assert read_onnx_card(onnx_card(renamed)).target == "yield_t_ha"
    assert load_served_model({ONNX_MODEL: model_bytes, ONNX_CARD: onnx_card(renamed)}).target == "actual"
    builtin = train(rows, builtin_config(rows), seed=1)
    assert load_served_model(builtin.to_files()).format == "builtin"
    with pytest.raises(IntegrityViolation, match=r"onnx_card\.json is malformed"):
        load_served_model({ONNX_MODEL: model_bytes, ONNX_CARD: b'{"format": "evolution.onnx-card/1"}'})
    with pytest.raises(ModelRefused, match="no input for the feature"):
        # a card that does not match the model is caught at load, not at the first prediction
        wider = ModelDefinition.model_validate(
            {
                **definition.model_dump(),
                "features": [*definition.model_dump()["features"], {"name": "slope_deg"}],
            }
        )
        load_served_model({ONNX_MODEL: model_bytes, ONNX_CARD: onnx_card(wider)})


def test_a_prediction_the_runtime_cannot_make_is_a_typed_failure() -> None:
    # A model that reshapes its batch to a fixed [3, 7]: it loads, and onnxruntime refuses to run it on 2 rows.
    only_rain = [FeatureSpec(name="rain_mm")]
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Reshape", ["rain_mm", "shape"], ["y"])],
            "bad_reshape",
            [onnx.helper.make_tensor_value_info("rain_mm", onnx.TensorProto.FLOAT, [None, 1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None])],
            [onnx.numpy_helper.from_array(np.array([3, 7], dtype=np.int64), "shape")],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    served = OnnxModel(model.SerializeToString(), only_rain)
    with pytest.raises(ModelFailed, match="failed to predict"):
        served.predict([{"rain_mm": 1.0}, {"rain_mm": 2.0}])


# ------------------------------------------------------------------------------------ registration checks


def test_a_model_that_follows_the_contract_passes_the_check(
    tmp_path: Path, model_bytes: bytes, definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    check = check_onnx_model(model_dir(tmp_path, model_bytes, definition), definition, probe)
    assert check.inputs == {
        f.name: "tensor(string)" if f.type == "categorical" else "tensor(float)" for f in definition.features
    }
    assert check.output_type == "tensor(float)" and check.probe_rows == len(probe["actual"])
    assert check.size_bytes == len(model_bytes) and np.isfinite(check.probe_mean)


def test_no_model_file_is_refused(
    tmp_path: Path, definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pkl").write_bytes(b"not what the contract asks for")
    with pytest.raises(ModelRefused, match=r"wrote no model\.onnx .*model\.pkl"):
        check_onnx_model(tmp_path / "out", definition, probe)


def test_a_model_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, rows: list[dict[str, Any]], definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    forest = sklearn_pipeline(
        rows, definition, RandomForestRegressor(n_estimators=40, random_state=0, n_jobs=1)
    )
    big = to_onnx(forest, definition)
    assert len(big) > 1024 * 1024
    tiny = definition.model_copy(update={"max_model_mb": 1})
    with pytest.raises(ModelRefused, match=r"model\.onnx is \d+\.\d MB, over the definition's limit of 1 MB"):
        check_onnx_model(model_dir(tmp_path, big, definition), tiny, probe)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"\x08\x07garbage" + bytes(range(256)) * 8, id="garbage"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_corrupt_bytes_are_refused_as_not_loadable(
    tmp_path: Path, model_bytes: bytes, definition: ModelDefinition, probe: dict[str, np.ndarray], damage: Any
) -> None:
    with pytest.raises(ModelRefused, match=r"model\.onnx cannot be loaded"):
        check_onnx_model(model_dir(tmp_path, damage(model_bytes), definition), definition, probe)


def test_tensors_saved_outside_the_file_are_refused_at_the_check_and_at_every_load(
    tmp_path: Path, rows: list[dict[str, Any]], definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    # A small neural network keeps its weights in tensors, which onnx can save beside the model instead of in it.
    network = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # twenty epochs are enough to have weights
        mlp = onnx.load_model_from_string(to_onnx(sklearn_pipeline(rows, definition, network), definition))
    for tensor in mlp.graph.initializer:  # as raw bytes, as PyTorch writes them: onnx externalises only those
        tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name))
    out = tmp_path / "out"
    out.mkdir()
    onnx.save_model(
        mlp, str(out / ONNX_MODEL), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    (out / ONNX_CARD).write_bytes(onnx_card(definition))
    assert (out / "weights.bin").is_file()  # the weights really are beside the model, not in it
    with pytest.raises(
        ModelRefused, match=r"in an external file \('weights\.bin'\): data outside its directory"
    ):
        check_onnx_model(out, definition, probe)
    files = {ONNX_MODEL: (out / ONNX_MODEL).read_bytes(), ONNX_CARD: (out / ONNX_CARD).read_bytes()}
    with pytest.raises(ModelRefused, match="external file"):
        load_served_model(files)  # signed by mistake or not, such a model never reaches onnxruntime


def test_an_input_not_named_as_its_feature_is_refused(
    tmp_path: Path, model_bytes: bytes, definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    renamed = onnx.load_model_from_string(model_bytes)
    for value in renamed.graph.input:
        if value.name == "rain_mm":
            value.name = "rain"
    for node in renamed.graph.node:
        node.input[:] = ["rain" if name == "rain_mm" else name for name in node.input]
    with pytest.raises(
        ModelRefused,
        match=r"no input for the feature\(s\) \['rain_mm'\] and input\(s\) \['rain'\] that are not",
    ):
        check_onnx_model(model_dir(tmp_path, renamed.SerializeToString(), definition), definition, probe)


def test_an_input_for_an_undeclared_feature_is_refused(
    tmp_path: Path, model_bytes: bytes, definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    narrower = definition.model_copy(
        update={"features": [f for f in definition.features if f.name != "ndvi_peak"]}
    )
    with pytest.raises(ModelRefused, match=r"input\(s\) \['ndvi_peak'\] that are not features"):
        check_onnx_model(model_dir(tmp_path, model_bytes, narrower), narrower, probe)


def test_a_declared_feature_without_an_input_is_refused(
    tmp_path: Path, model_bytes: bytes, definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    wider = definition.model_copy(update={"features": [*definition.features, FeatureSpec(name="slope_deg")]})
    with pytest.raises(ModelRefused, match=r"no input for the feature\(s\) \['slope_deg'\]"):
        check_onnx_model(model_dir(tmp_path, model_bytes, wider), wider, probe)


@pytest.mark.parametrize(
    ("feature", "declared", "message"),
    [
        ("crop", "numeric", r"input 'crop' is tensor\(string\), but the feature is numeric"),
        ("rain_mm", "categorical", r"input 'rain_mm' is tensor\(float\), but the feature is categorical"),
    ],
)
def test_an_input_of_the_wrong_type_for_its_feature_is_refused(
    tmp_path: Path,
    model_bytes: bytes,
    definition: ModelDefinition,
    probe: dict[str, np.ndarray],
    feature: str,
    declared: str,
    message: str,
) -> None:
    retyped = definition.model_copy(
        update={
            "features": [
                FeatureSpec(name=f.name, type=declared) if f.name == feature else f  # type: ignore[arg-type]
                for f in definition.features
            ]
        }
    )
    with pytest.raises(ModelRefused, match=message):
        check_onnx_model(model_dir(tmp_path, model_bytes, retyped), retyped, probe)


def test_a_model_whose_first_output_is_not_numeric_is_refused(
    tmp_path: Path, rows: list[dict[str, Any]], probe: dict[str, np.ndarray]
) -> None:
    # A classifier of yield classes: its first output is the predicted label, text.
    crop_only = onnx_definition(["crop"])
    labelled = [{**r, "actual": "high" if r["actual"] > 5 else "low"} for r in rows]
    classifier = Pipeline(
        [
            ("onehot", ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["crop"])])),
            ("m", LogisticRegression()),
        ]
    ).fit(frame(labelled, crop_only), [r["actual"] for r in labelled])
    with pytest.raises(
        ModelRefused, match=r"first output 'output_label' is tensor\(string\), not a numeric tensor"
    ):
        check_onnx_model(model_dir(tmp_path, to_onnx(classifier, crop_only), crop_only), crop_only, probe)


def test_a_model_giving_nan_for_a_missing_value_is_refused(
    tmp_path: Path, rows: list[dict[str, Any]], definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    # The author forgot the imputer (and trained on complete rows only): numbers pass straight into a linear model,
    # so a held-out row with a missing value gives NaN.
    numeric = [f.name for f in definition.features if f.type == "numeric"]
    complete = [r for r in rows if all(r.get(name) is not None for name in numeric)]
    no_imputer = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("n", "passthrough", numeric),
                        ("c", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
                    ]
                ),
            ),
            ("m", Ridge()),
        ]
    ).fit(frame(complete, definition), [r["actual"] for r in complete])
    model = to_onnx(no_imputer, definition)
    gaps = np.zeros(len(probe["actual"]), dtype=bool)
    for name in numeric:
        gaps |= np.isnan(probe[name])
    assert gaps.any(), "the demo's held-out rows have missing values"
    with pytest.raises(
        ModelRefused,
        match=rf"gave {int(gaps.sum())} non-finite predictions .* probe batch of 300 .*first at row {int(np.argmax(gaps))}",
    ):
        check_onnx_model(model_dir(tmp_path, model, definition), definition, probe)
    # the same model on complete rows is fine: it is the missing values that break it
    complete_probe = {name: col[~gaps] for name, col in probe.items()}
    check_onnx_model(model_dir(tmp_path / "complete", model, definition), definition, complete_probe)


def test_a_model_giving_more_than_one_prediction_per_row_is_refused(
    tmp_path: Path, rows: list[dict[str, Any]], definition: ModelDefinition, probe: dict[str, np.ndarray]
) -> None:
    # Fitted on two targets (yield and a copy), it answers [N, 2].
    pipeline = sklearn_pipeline(rows, definition, Ridge())
    pipeline.fit(frame(rows, definition), np.column_stack([[r["actual"] for r in rows]] * 2))
    with pytest.raises(
        ModelRefused, match=r"first output has shape \[300, 2\] .* asks for \[300\] or \[300, 1\]"
    ):
        check_onnx_model(model_dir(tmp_path, to_onnx(pipeline, definition), definition), definition, probe)


# ------------------------------------------------------------------------- validation: mixed formats


def builtin_config(rows: list[dict[str, Any]]) -> TrainingConfig:
    return TrainingConfig(
        features=demo_features(rows),
        categorical=list(CATEGORICAL),
        target="actual",
        split_keys=["request_id"],
        max_iter=40,
    )


def test_a_builtin_champion_and_an_onnx_candidate_are_validated_on_the_same_rows_and_the_other_way_round(
    onnx_model: OnnxModel, rows: list[dict[str, Any]], holdout: list[dict[str, Any]]
) -> None:
    builtin = train(rows, builtin_config(rows), seed=1)
    actual = np.array([r["actual"] for r in holdout])
    onnx_mae = float(np.mean(np.abs(onnx_model.predict(holdout) - actual)))
    builtin_mae = float(np.mean(np.abs(builtin.predict(holdout) - actual)))

    forwards = validate(onnx_model, builtin, holdout, max_regression=10.0)
    assert forwards.passed and forwards.n == len(holdout)
    assert forwards.candidate_mae == pytest.approx(onnx_mae) and forwards.champion_mae == pytest.approx(
        builtin_mae
    )

    backwards = validate(builtin, onnx_model, holdout, max_regression=10.0)
    assert backwards.passed
    assert backwards.candidate_mae == pytest.approx(builtin_mae) and backwards.champion_mae == pytest.approx(
        onnx_mae
    )
    assert (forwards.improvement is None) == (backwards.improvement is None)


def test_the_held_out_split_is_read_from_the_manifest_for_either_format(rows: list[dict[str, Any]]) -> None:
    config = builtin_config(rows).model_copy(update={"holdout_fraction": 0.3})
    builtin_split = holdout_split(config.model_dump(mode="json"))
    assert builtin_split.fraction == 0.3 and builtin_split.split_keys == ["request_id"]
    contract_split = holdout_split({"contract": "evolution-training/1", "holdout": {"fraction": 0.3}})
    np.testing.assert_array_equal(builtin_split.mask(rows), contract_split.mask(rows))
    with pytest.raises(IntegrityViolation, match="no held-out split"):
        holdout_split({"contract": "evolution-training/1"})


# ----------------------------------------------------------------------- serving and drift: registry


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home"))
    svc.tenants.ensure_tenant(ADMIN, TENANT)
    yield svc
    svc.close()


def forecasts(n: int) -> list[PredictInstance]:
    return [
        PredictInstance(
            request_id=f"q-{i}",
            features={
                k: v for k, v in r.items() if k not in ("actual", "request_id", "event_time", "field_id")
            },
        )
        for i, r in enumerate(demo_rows(n, seed=9))
    ]


@pytest.mark.parametrize("champion_format", ["builtin", "onnx"])
def test_a_champion_of_one_format_serves_beside_a_canary_of_the_other(
    services: Services, tmp_path: Path, champion_format: str
) -> None:
    install = {"builtin": install_model, "onnx": install_onnx_model}
    candidate_format = "onnx" if champion_format == "builtin" else "builtin"
    champion = install[champion_format](services, TENANT, tmp_path, ModelState.CHAMPION, seed=1)
    candidate = install[candidate_format](services, TENANT, tmp_path, ModelState.CANARY, seed=2)
    predictor = services.predictor(canary_share=0.5, refresh_s=0.0)
    system = Principal.system(TENANT)
    outs = predictor.predict(system, TENANT, "yield", forecasts(60))
    served = {o.served_by for o in outs}
    assert served == {champion.id, candidate.id}, "both formats answered"
    assert all(np.isfinite(o.prediction) for o in outs)
    slot = predictor._slots[(TENANT, "yield")]
    assert slot.champion is not None and slot.champion.model.format == champion_format
    assert slot.candidate is not None and slot.candidate.model.format == candidate_format
    assert slot.candidate.card.get("format") == (
        "evolution.onnx-card/1" if candidate_format == "onnx" else "evolution.hist_gbr/1"
    )
    assert predictor.records.flush(10.0)
    assert services.outcomes.candidate_health(TENANT, candidate.id) == (
        60,
        0,
    )  # scored every request, validly


def test_the_validation_step_scores_an_onnx_candidate_on_the_rows_its_manifest_held_out(
    services: Services, tmp_path: Path
) -> None:
    seed_tenant(services, Scenario(tenant_id=TENANT, history_rows=400))
    snapshot = services.snapshots.seal(ADMIN, TENANT, utcnow())
    install_model(services, TENANT, tmp_path, ModelState.CHAMPION, seed=1)
    rows = demo_rows(800, seed=2)
    # The trainer knows the outcome as yield_t_ha; the system keeps it as `actual`, like the built-in champion's.
    definition = onnx_definition(demo_features(rows), target="yield_t_ha")
    trainer_rows = [{**r, "yield_t_ha": r["actual"]} for r in rows]
    out = write_onnx_model(
        tmp_path / "onnx", to_onnx(sklearn_pipeline(trainer_rows, definition), definition), definition
    )
    # as the training contract's runner records its run: config.json, and the split it held out
    config = {"contract": "evolution-training/1", "holdout": {"fraction": 0.3, "split_keys": ["request_id"]}}
    signed = sign_manifest(
        build_manifest_from_dir(
            out,
            tenant=TENANT,
            model_name="yield",
            dataset_snapshot_id=snapshot.id,
            dataset_merkle_root=snapshot.merkle_root,
            training_config=config,
            seed=2,
            trainer="test",
            store=services.store,
        ),
        services.signer,
    )
    builder = services.candidate_builder()
    report = builder.validate(
        TENANT, "yield", "mv-onnx", signed.model_dump(mode="json", by_alias=True), signed.digest
    )
    held_out = int(HoldoutSplit(fraction=0.3).mask(builder.training_rows(snapshot)).sum())
    assert report.n == held_out > 0
    assert report.candidate_mae is not None and report.champion_mae is not None, report.reason
    assert f"on the same {held_out} held-out rows" in report.reason


def test_a_failing_onnx_candidate_never_costs_the_champion_its_answer(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = install_model(services, TENANT, tmp_path, ModelState.CHAMPION, seed=1)
    install_onnx_model(services, TENANT, tmp_path, ModelState.CANARY, seed=2)
    predictor = services.predictor(canary_share=1.0, refresh_s=0.0)
    system = Principal.system(TENANT)
    predictor.predict(system, TENANT, "yield", forecasts(1))  # loads both

    def broken(self: OnnxModel, data: Any) -> np.ndarray:
        raise ModelFailed("the ONNX model failed to predict: simulated runtime fault")

    monkeypatch.setattr(OnnxModel, "predict", broken)
    outs = predictor.predict(system, TENANT, "yield", forecasts(20))
    assert {o.served_by for o in outs} == {champion.id} and {o.role for o in outs} == {"champion"}


def test_the_drift_scan_measures_an_onnx_champions_error(services: Services, tmp_path: Path) -> None:
    seed_tenant(services, Scenario(tenant_id=TENANT, history_rows=400))
    services.snapshots.seal(ADMIN, TENANT, utcnow())
    install_onnx_model(services, TENANT, tmp_path, ModelState.CHAMPION, seed=1)
    # The reset baseline holds the ONNX champion's errors on the latest window (computed through the port)...
    services.baselines.reset(ADMIN, TENANT, "yield", "an ONNX champion's own baseline", services.keyring)
    snapshot = services.snapshots.latest(ADMIN, TENANT)
    assert snapshot is not None
    result = services.drift_scanner.scan(TENANT, "yield", snapshot.id)
    # ...and the scan of that same window measures the same errors again: MAE present, nothing drifted.
    assert result.level == "ok" and result.report_id is not None
    [report] = services.drift_reports.list_reports(ADMIN, TENANT)
    mae = report.report["result"]["mae"]
    assert mae is not None and mae["status"] == "ok" and mae["n"] == mae["m"] > 0
    assert mae["window_mae"] == pytest.approx(mae["baseline_mae"]) and mae["window_mae"] > 0


# ------------------------------------------------------------------------------------------- explaining


def test_an_onnx_model_is_explained_by_an_estimate_that_says_so_with_its_sample_size(
    onnx_model: OnnxModel, holdout: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> None:
    started = time.perf_counter()
    explanation = shap_values(onnx_model, holdout, background=rows)
    elapsed = time.perf_counter() - started
    assert not explanation.exact and explanation.estimate is not None
    assert explanation.estimate.explainer == "shap.SamplingExplainer"
    assert explanation.estimate.background_rows == ESTIMATE_BACKGROUND_ROWS
    assert explanation.estimate.samples_per_feature == ESTIMATE_SAMPLES
    n_features = len(onnx_model.features)
    assert explanation.n_rows == ESTIMATE_MAX_ROWS and explanation.values.shape == (
        ESTIMATE_MAX_ROWS,
        n_features,
    )
    assert explanation.method == (
        f"estimate (shap.SamplingExplainer): {ESTIMATE_MAX_ROWS} rows explained, {ESTIMATE_SAMPLES} samples per "
        f"feature each, against a background sample of {ESTIMATE_BACKGROUND_ROWS} rows"
    )
    # every estimated row adds up to the served prediction (shap corrects the sum)
    served = onnx_model.predict([holdout[int(i)] for i in explanation.row_indices])
    np.testing.assert_allclose(explanation.base_value + explanation.values.sum(axis=1), served, rtol=1e-4)
    # the base value is the model's mean prediction on the background sample
    assert abs(explanation.base_value - float(np.mean(onnx_model.predict(rows)))) < 0.2
    # the demo's yield is driven by vegetation, weather and crop, which the estimate finds
    top = [name for name, _ in global_importance(explanation)[:4]]
    assert {"ndvi_peak", "rain_mm", "crop"} & set(top), top
    # the same input gives the same estimate (seeded), and a waterfall of one forecast works as for TreeSHAP
    again = shap_values(onnx_model, holdout, background=rows)
    np.testing.assert_array_equal(again.values, explanation.values)
    chart = waterfall(shap_values(onnx_model, holdout[:1], background=rows), 0)
    assert chart.prediction == pytest.approx(float(onnx_model.predict(holdout[:1])[0]))
    assert chart.base_value + sum(c.shap for c in chart.contributions) == pytest.approx(
        chart.prediction, rel=1e-4
    )
    assert elapsed < 15.0  # bounded rows and evaluations (about 1 s on a quiet machine)


def test_the_builtin_format_keeps_exact_tree_shap(
    rows: list[dict[str, Any]], holdout: list[dict[str, Any]]
) -> None:
    builtin: TrainedModel = train(rows, builtin_config(rows), seed=1)
    explanation = shap_values(builtin, holdout[:50], background=rows)
    assert (
        explanation.exact and explanation.estimate is None and explanation.method.startswith("exact TreeSHAP")
    )
