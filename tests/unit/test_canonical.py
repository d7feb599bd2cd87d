"""Canonical JSON: one byte encoding per value, and refusal of values that have none."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel

from evolution.canonical import canonical_json, sha256_hex
from evolution.errors import InvalidInput


class Reading(BaseModel):
    field_id: str
    ndvi: float
    tags: dict[str, int]


def test_keys_are_sorted_and_there_is_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}}) == b'{"a":{"c":null,"d":[1,2]},"b":1}'


def test_key_order_of_the_input_does_not_matter() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


def test_text_is_utf8_without_ascii_escapes() -> None:
    assert canonical_json({"поле": "урожай"}) == '{"поле":"урожай"}'.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.1, b"0.1"), (1.0, b"1.0"), (-0.0, b"-0.0"), (1e16, b"1e+16"), (2.5e-8, b"2.5e-08")],
)
def test_floats_use_the_shortest_round_trip_repr(value: float, expected: bytes) -> None:
    assert canonical_json(value) == expected
    assert json.loads(canonical_json(value)) == value


def test_pydantic_models_encode_as_their_json_dump_also_when_nested() -> None:
    reading = Reading(field_id="f1", ndvi=0.5, tags={"b": 2, "a": 1})
    assert canonical_json(reading) == b'{"field_id":"f1","ndvi":0.5,"tags":{"a":1,"b":2}}'
    assert canonical_json({"r": reading}) == b'{"r":' + canonical_json(reading) + b"}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), {"a": [1, float("nan")]}])
def test_nan_and_infinity_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="NaN"):
        canonical_json(bad)


@pytest.mark.parametrize("bad", [{1: "a"}, {"a": {True: 1}}, {"a": [{None: 1}]}])
def test_non_string_keys_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="not a string"):
        canonical_json(bad)


@pytest.mark.parametrize("bad", [{1, 2}, b"bytes", object(), {"when": date(2026, 1, 1)}])
def test_values_without_a_json_type_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="convert it"):
        canonical_json(bad)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(InvalidInput, match="Unicode"):
        canonical_json({"a": "\ud800"})


def test_circular_structures_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidInput, match="Circular"):
        canonical_json(loop)


def test_sha256_hex_is_lowercase_hex_of_the_bytes() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
