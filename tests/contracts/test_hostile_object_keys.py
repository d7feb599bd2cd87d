"""Hostile object keys against both artifact stores: every one refused with InvalidInput, nothing written.

For each key: put_object, get_object and list_objects(prefix=key) must all raise InvalidInput whose message says
what is wrong, and the raw state below the port (every path under the filesystem root; every S3 bucket, object
version and delete marker of the store) must be exactly what it was before.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from evolution.errors import InvalidInput
from evolution.integrity.object_keys import canonical_object_key
from tests.contracts.conftest import StoreUnderTest, filesystem_store, make_s3_store

TENANT = "acme"
OTHER_TENANT = "globex"

HOSTILE_KEYS: list[tuple[str, Any]] = [
    ("parent", "../x"),
    ("parent-deep", "a/../../b"),
    ("parent-middle", "a/b/../c"),
    ("parent-last", "x/.."),
    ("dot-first", "./x"),
    ("dot-middle", "a/./b"),
    ("dot", "."),
    ("dotdot", ".."),
    ("pct-dotdot", "%2e%2e/x"),
    ("pct-upper-slash", "%2E%2E%2Fx"),
    ("pct-slash", "a%2fb"),
    ("pct-nul", "a%00b"),
    ("pct-double", "%252e%252e/x"),
    ("absolute", "/etc/passwd"),
    ("double-slash", "a//b"),
    ("trailing-slash", "a/"),
    ("leading-slash", "/a"),
    ("nul", "a\x00b"),
    ("backslash", "a\\b"),
    ("backslash-parent", "..\\x"),
    ("drive", "C:\\x"),
    ("drive-relative", "C:x"),
    ("unc", "\\\\server\\share"),
    ("home", "~/.ssh"),
    ("hidden-segment", "a/.git/config"),
    ("dash-segment", "-rf"),
    ("tenants-prefix", "tenants/globex/x"),
    ("other-tenant-prefix", f"{OTHER_TENANT}/audit-checkpoints/1.json"),
    ("own-tenant-prefix", f"{TENANT}/x"),
    ("overlong", "k" * 600),
    ("overlong-segment", "a/" + "s" * 129),
    ("too-many-segments", "/".join(["s"] * 40)),
    ("one-dot-leader", "\u2024\u2024/x"),
    ("fullwidth-dots", "\uff0e\uff0e/x"),
    ("fullwidth-solidus", "a\uff0fb"),
    ("division-slash", "a\u2215b"),
    ("fullwidth-backslash", "a\uff3cb"),
    ("fullwidth-letter", "\uff41"),
    ("zero-width-space", "a\u200bb"),
    ("rtl-override", "a\u202eb"),
    ("lone-surrogate", "a\ud800b"),
    ("leading-space", " a"),
    ("trailing-space", "a "),
    ("inner-space", "a b"),
    ("newline", "\n"),
    ("newline-inside", "a\nb"),
    ("carriage-return", "a\rb"),
    ("tab", "a\tb"),
    ("delete-char", "a\x7fb"),
    ("escape-char", "a\x1b[31mb"),
    ("url", "file:///etc/passwd"),
    ("query", "a?b"),
    ("fragment", "a#b"),
    ("glob", "a*"),
    ("empty", ""),
    ("bytes", b"x"),
    ("none", None),
]
assert len(HOSTILE_KEYS) >= 30


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> StoreUnderTest:
    """Each store, once per module: both tenants exist and hold objects (something to reach for and to list).

    The store carries explicit fake credentials, so it needs no environment; a refused key changes nothing,
    which is what every test checks, so sharing the store between them is safe.
    """
    if request.param == "filesystem":
        under_test = filesystem_store(tmp_path_factory.mktemp("hostile") / "artifacts")
    else:
        under_test = make_s3_store(request.getfixturevalue("moto_endpoint"))
    store = under_test.store
    store.put_object(TENANT, "audit-checkpoints/000000000001.json", b"mine")
    store.put_object(OTHER_TENANT, "audit-checkpoints/1.json", b"theirs")
    store.put_bytes(TENANT, b"an artifact")
    return under_test


@pytest.mark.parametrize(("label", "key"), HOSTILE_KEYS, ids=[label for label, _ in HOSTILE_KEYS])
def test_hostile_key_is_refused_and_nothing_is_written(seeded: StoreUnderTest, label: str, key: Any) -> None:
    store = seeded.store
    before = seeded.raw_state()
    listed_before = store.list_objects(TENANT)
    calls = [
        ("put_object", lambda: store.put_object(TENANT, key, b"payload")),
        ("get_object", lambda: store.get_object(TENANT, key)),
    ]
    if key != "":  # the empty prefix legitimately means "everything"
        calls.append(("list_objects", lambda: store.list_objects(TENANT, key)))
    accepted = []
    for name, call in calls:
        try:
            call()
        except InvalidInput as error:
            assert "object key" in str(error) and "refused" in str(error), str(error)
        else:
            accepted.append(name)
    assert accepted == [], f"{label}: {key!r} accepted by {accepted}"
    assert seeded.raw_state() == before
    assert store.list_objects(TENANT) == listed_before
    assert store.get_object(OTHER_TENANT, "audit-checkpoints/1.json") == b"theirs"


@pytest.mark.parametrize(("label", "key"), HOSTILE_KEYS, ids=[label for label, _ in HOSTILE_KEYS])
def test_canonicaliser_refuses_every_hostile_key_with_a_reason(label: str, key: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        canonical_object_key(TENANT, key, other_tenants=[OTHER_TENANT])
    message = str(caught.value)
    assert ": " in message.split("refused", 1)[1], message  # "... is refused: <the problem>"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("%2e%2e/x", "percent-encoded"),
        ("a/../b", "'..' segment"),
        ("a//b", "empty segment"),
        ("/etc/passwd", "absolute"),
        ("a\x00b", "NUL"),
        ("a\\b", "backslash"),
        ("\u2024\u2024/x", "look-alike of '.'"),
        ("a\uff0fb", "look-alike of '/'"),
        ("k" * 600, "longer than 512 bytes"),
        ("a/" + "s" * 129, "more than 128"),
        (" a", "whitespace"),
        ("a\tb", "control character"),
        ("tenants/x", "tenant namespace"),
        (f"{OTHER_TENANT}/x", "another tenant"),
        (f"{TENANT}/x", "the tenant id"),
    ],
)
def test_the_refusal_names_the_problem(key: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(problem)):
        canonical_object_key(TENANT, key, other_tenants=[OTHER_TENANT])


@pytest.mark.parametrize(
    "key",
    [
        "audit-checkpoints/000000001200.json",
        "a",
        "A/b_c/d-e/f.g",
        "0/1/2",
        "x.",
        "s" * 128,
        "/".join(["s" * 15] * 32),
    ],
)
def test_canonical_keys_are_accepted_unchanged(key: str) -> None:
    assert canonical_object_key(TENANT, key, other_tenants=[OTHER_TENANT]) == key
