"""Canonical JSON: the one byte encoding that is hashed and signed.

At the top of evolution/ because every room that hashes or signs (registry, data, drift, integrity, training) shares
this one encoding; it imports only errors.

Two parties that hold the same logical value must produce the same bytes, or a signature made by one will not
verify for the other. The rules: object keys sorted and strings only, no insignificant whitespace, UTF-8
without ASCII escaping, floats as Python's shortest round-trip ``repr``, and no NaN or infinity (JSON has no
spelling for them, and every ad-hoc spelling breaks somebody's parser). Anything else that is not plainly JSON
(datetimes, sets, bytes, ...) is refused rather than guessed at: the caller converts it explicitly, so the
encoding never depends on a library default.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from evolution.errors import InvalidInput


def _default(obj: Any) -> Any:
    """Pydantic models (nested ones too) encode as their JSON-mode dump; nothing else is converted."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"object of type {type(obj).__name__} has no canonical JSON encoding")


_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=True,
    default=_default,
)


def _check_keys(obj: Any) -> None:
    """Refuse non-string keys: {1: x} and {"1": x} would otherwise encode to the same bytes."""
    stack: list[Any] = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise InvalidInput(
                        f"canonical JSON: object key {key!r} is a {type(key).__name__}, not a string"
                    )
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        # pydantic models are skipped: their JSON-mode dump has string keys by construction


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` canonically as UTF-8 bytes; raises InvalidInput for anything without one encoding."""
    text = _encode(obj)
    _check_keys(obj)  # after encoding, which has already refused circular structures
    return _utf8(text)


def canonical_json_of_decoded(obj: Any) -> bytes:
    """:func:`canonical_json` for values whose every object came from decoding JSON text (or str literals).

    Such objects have string keys by construction, so the key walk, which costs more than the encoding on a
    window of events, is skipped; the bytes are the same.
    """
    return _utf8(_encode(obj))


def _encode(obj: Any) -> str:
    try:
        text: str = _ENCODER.encode(obj)
    except ValueError as error:  # NaN/inf, circular reference
        if "float" in str(error):
            raise InvalidInput(
                "canonical JSON: NaN and infinity have no JSON encoding; refuse or drop them"
            ) from None
        raise InvalidInput(f"canonical JSON: {error}") from None
    except TypeError as error:  # a type json does not know (datetime, set, bytes, ...)
        raise InvalidInput(f"canonical JSON: {error}; convert it to a JSON type explicitly") from None
    return text


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates have no UTF-8 encoding
        raise InvalidInput(f"canonical JSON: string is not valid Unicode ({error.reason})") from None


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
