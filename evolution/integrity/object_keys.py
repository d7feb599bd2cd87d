"""Canonical keys for named objects in the artifact store (``audit-checkpoints/000000001200.json``).

Named objects are things the system names itself. Their keys are *validated*, never cleaned: a key is accepted
only if it already is canonical, so the bytes a caller passed are exactly the key that is stored, and there is no
second spelling of any key (no ``a/./b`` for ``a/b``, no ``%2e%2e`` for ``..``, no fullwidth dot for ``.``).

A canonical key is 1..32 segments joined by ``/``; each segment matches ``[A-Za-z0-9][A-Za-z0-9._-]*`` and is at
most 128 bytes; the whole key is at most 512 bytes. A key is relative to the tenant: it may not start with the
tenant's own id, with ``tenants/`` or with another tenant's id (those the store knows), since the store adds the
tenant's namespace itself.

The checks run in a fixed order so that the error names the first real problem (``percent-encoding``, ``'..'
segment``, ``non-ASCII character U+2024`` ...), not just "does not match the pattern".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from evolution.errors import InvalidInput

MAX_KEY_BYTES = 512
MAX_SEGMENT_BYTES = 128
MAX_SEGMENTS = 32
SEGMENT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: First segments that look like a store-level tenant namespace rather than a key inside one.
RESERVED_FIRST_SEGMENTS = frozenset({"tenants", "tenant"})

_DOTS = frozenset({"\u2024", "\u2025", "\u2026", "\uff0e", "\ufe52", "\u3002", "\uff61", "\u0701", "\u0702"})
_SLASHES = frozenset({"\u2215", "\u2044", "\uff0f", "\u29f8", "\u2571", "\u3033"})
_BACKSLASHES = frozenset({"\uff3c", "\u29f5", "\u29f9", "\ufe68", "\u2216"})


def _describe_char(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def _refuse(key: object, problem: str) -> InvalidInput:
    shown = repr(key)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidInput(f"object key {shown} is refused: {problem}")


def _check_characters(key: str) -> None:
    for char in key:
        code = ord(char)
        if char == "\x00":
            raise _refuse(key, "it contains a NUL character")
        if code < 0x20 or code == 0x7F:
            raise _refuse(key, f"it contains the control character {_describe_char(char)}")
        if char == "\\":
            raise _refuse(key, "it contains a backslash; segments are separated by '/' only")
        if char == "%":
            raise _refuse(
                key, "it contains '%': percent-encoded forms (such as %2e%2e or %2f) are not decoded"
            )
        if code > 0x7E:
            kind = (
                "a look-alike of '.'"
                if char in _DOTS
                else "a look-alike of '/'"
                if char in _SLASHES
                else "a look-alike of '\\'"
                if char in _BACKSLASHES
                else "not ASCII"
            )
            raise _refuse(key, f"it contains {_describe_char(char)}, {kind}; keys are ASCII only")


def _check_segment(key: str, segment: str, index: int) -> None:
    if segment == "":
        raise _refuse(key, "it has an empty segment ('//', or a leading or trailing '/')")
    if segment in (".", ".."):
        raise _refuse(key, f"it has a {segment!r} segment; relative path segments are not allowed")
    if len(segment) > MAX_SEGMENT_BYTES:
        raise _refuse(key, f"segment {index + 1} is {len(segment)} bytes, more than {MAX_SEGMENT_BYTES}")
    if not SEGMENT_PATTERN.match(segment):
        bad = next((c for c in segment if not (c.isascii() and (c.isalnum() or c in "._-"))), None)
        if bad is not None:
            raise _refuse(key, f"segment {segment!r} contains {bad!r}; allowed are A-Z a-z 0-9 . _ -")
        raise _refuse(key, f"segment {segment!r} must start with a letter or a digit")


def canonical_object_key(tenant: str, key: str, *, other_tenants: Iterable[str] = ()) -> str:
    """Return ``key`` if it is a canonical object key for ``tenant``; InvalidInput naming the problem if not.

    ``other_tenants`` are tenant ids the store knows of: a key whose first segment is one of them is refused as
    an attempt to reach into another tenant's namespace (and so is one that starts with ``tenant`` itself, or
    with ``tenants/``).
    """
    if not isinstance(key, str):
        raise _refuse(key, f"it is a {type(key).__name__}, not a str")
    if key == "":
        raise _refuse(key, "it is empty")
    if len(key) > MAX_KEY_BYTES * 4 or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise _refuse(key, f"it is longer than {MAX_KEY_BYTES} bytes")
    if key != key.strip():
        raise _refuse(key, "it has leading or trailing whitespace")
    _check_characters(key)
    if key.startswith("/"):
        raise _refuse(key, "it is an absolute path; keys are relative to the tenant")
    if key.startswith("~"):
        raise _refuse(key, "it starts with '~' (a home directory reference)")
    if len(key) >= 2 and key[1] == ":" and key[0].isalpha():
        raise _refuse(key, "it starts with a drive letter")
    segments = key.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise _refuse(key, f"it has {len(segments)} segments, more than {MAX_SEGMENTS}")
    for index, segment in enumerate(segments):
        _check_segment(key, segment, index)
    first = segments[0]
    if first in RESERVED_FIRST_SEGMENTS:
        raise _refuse(
            key, f"it starts with {first + '/'!r}, a tenant namespace; keys are relative to the tenant"
        )
    if first == tenant:
        raise _refuse(
            key, f"it starts with the tenant id {tenant!r}; the store adds the tenant's namespace itself"
        )
    if first in set(other_tenants):
        raise _refuse(key, f"it starts with {first + '/'!r}, another tenant's namespace")
    return key


def key_is_under(key: str, prefix: str) -> bool:
    """Whether canonical ``key`` is ``prefix`` or below it, segment-wise (``a/b`` is under ``a``, not ``a/bc``)."""
    return prefix == "" or key == prefix or key.startswith(prefix + "/")


def canonical_prefix(tenant: str, prefix: str, *, other_tenants: Iterable[str] = ()) -> str:
    """A list prefix: ``""`` (everything) or a canonical key, matched segment-wise (see :func:`key_is_under`).

    A trailing ``/`` is refused like in any key: write ``audit-checkpoints``, not ``audit-checkpoints/``.
    """
    if prefix == "":
        return prefix
    return canonical_object_key(tenant, prefix, other_tenants=other_tenants)
