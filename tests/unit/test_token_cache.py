"""The serving API's token cache: fresh answers reused, revocation after the fresh window, stale answers only while
the registry is unreachable (and only for 15 minutes), refusals never kept long, bounded size."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from evolution.errors import PermissionDenied
from evolution.governance.tokens import TOKEN_REFUSED
from evolution.governance.users import UserAccess
from evolution.security import Role
from evolution.serving.auth import AuthenticationUnavailable, TokenAuthenticator

GOOD, OTHER, BAD = "evo_good", "evo_other", "evo_bad"


class Registry:
    """Answers like TokenService.authenticate_token, counting calls; can be made unreachable or revoke a token."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.revoked: set[str] = set()

    def authenticate_token(self, token: str) -> UserAccess:
        self.calls += 1
        if self.down:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        if token == BAD or token in self.revoked:
            raise PermissionDenied(TOKEN_REFUSED)
        return UserAccess(username=token, roles={"acme": Role.VIEWER})


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(registry: Registry, clock: Clock) -> TokenAuthenticator:
    return TokenAuthenticator(registry.authenticate_token, fresh_s=60, stale_s=900, refused_s=5, clock=clock)


def test_a_fresh_answer_is_reused_and_a_revocation_applies_after_the_fresh_window(
    cache: TokenAuthenticator, registry: Registry, clock: Clock
) -> None:
    assert cache.authenticate(GOOD).username == GOOD
    clock.t += 59
    assert cache.authenticate(GOOD).username == GOOD
    assert registry.calls == 1
    registry.revoked.add(GOOD)
    clock.t += 1  # 60 s after the check: asked again, and refused
    with pytest.raises(PermissionDenied):
        cache.authenticate(GOOD)
    assert registry.calls == 2


def test_a_cached_answer_serves_while_the_registry_is_down_for_at_most_15_minutes(
    cache: TokenAuthenticator, registry: Registry, clock: Clock
) -> None:
    cache.authenticate(GOOD)
    registry.down = True
    for minutes in (2, 10, 14.9):
        clock.t = 1000.0 + minutes * 60
        assert cache.authenticate(GOOD).username == GOOD  # the registry was asked, and could not answer
    clock.t = 1000.0 + 15 * 60
    with pytest.raises(AuthenticationUnavailable):
        cache.authenticate(GOOD)
    with pytest.raises(AuthenticationUnavailable):  # never checked: no answer to fall back on
        cache.authenticate(OTHER)
    registry.down = False
    assert cache.authenticate(GOOD).username == GOOD
    assert cache.authenticate(OTHER).username == OTHER


def test_a_refusal_is_kept_only_a_few_seconds_and_is_never_served_from_a_stale_answer(
    cache: TokenAuthenticator, registry: Registry, clock: Clock
) -> None:
    with pytest.raises(PermissionDenied):
        cache.authenticate(BAD)
    with pytest.raises(PermissionDenied):
        cache.authenticate(BAD)
    assert registry.calls == 1  # a client hammering with a bad token costs one lookup per 5 s
    clock.t += 5
    with pytest.raises(PermissionDenied):
        cache.authenticate(BAD)
    assert registry.calls == 2
    # A token refused once, then the registry goes down: the earlier positive answer is gone, not reused.
    cache.authenticate(GOOD)
    registry.revoked.add(GOOD)
    clock.t += 60
    with pytest.raises(PermissionDenied):
        cache.authenticate(GOOD)
    registry.down = True
    clock.t += 10
    with pytest.raises(AuthenticationUnavailable):
        cache.authenticate(GOOD)


def test_the_cache_is_bounded_and_keyed_by_digest_not_by_token(registry: Registry, clock: Clock) -> None:
    cache = TokenAuthenticator(registry.authenticate_token, max_entries=3, clock=clock)
    for i in range(10):
        cache.authenticate(f"evo_{i}")
    assert len(cache._verified) == 3
    assert not any(key.startswith("evo_") for key in cache._verified)
    calls = registry.calls
    cache.authenticate("evo_9")  # recent: cached
    cache.authenticate("evo_0")  # evicted: asked again
    assert registry.calls == calls + 1


def test_fresh_window_must_not_exceed_the_stale_window(registry: Registry) -> None:
    with pytest.raises(ValueError, match="fresh_s"):
        TokenAuthenticator(registry.authenticate_token, fresh_s=1000, stale_s=900)
