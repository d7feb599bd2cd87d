"""Bearer-token authentication of the serving API, with a cache that keeps predictions flowing while the DB is down.

A token is checked against the registry (``TokenService.authenticate_token``) and a positive answer is cached:

* for ``fresh_s`` (default 60 s) it is used without asking the registry again: a revoked token, a disabled user or
  a withdrawn role is refused at most ``fresh_s`` after the change (the revocation latency);
* after that the registry is asked again; only when it cannot be reached (an error that is not a refusal) is the
  cached answer kept, for at most ``stale_s`` (default 15 min) after the last successful check. During a registry
  outage a revoked token therefore keeps working until the registry is back or ``stale_s`` has passed.

While the registry is unreachable a stale answer is used without asking again for ``retry_s`` (default 1 s) after
each failed lookup, so that requests do not each wait for the registry to fail; the outage is logged when it starts
and when it ends, not per request.

A refusal is never kept long: for ``refused_s`` (default 5 s) the same token is refused without another lookup,
which keeps a client retrying a bad token from costing a query each time. Tokens are keyed by their SHA-256, so the
cache holds no token; both caches are bounded (least recently used entries go first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from evolution.errors import EvolutionError, PermissionDenied
from evolution.governance.tokens import TOKEN_REFUSED, token_digest
from evolution.governance.users import UserAccess
from evolution.serving.outage import Outage

log = logging.getLogger(__name__)

DEFAULT_FRESH_S = 60.0
DEFAULT_STALE_S = 15 * 60.0
DEFAULT_REFUSED_S = 5.0
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_RETRY_S = 1.0

_V = TypeVar("_V")


class AuthenticationUnavailable(EvolutionError):
    """The registry could not be asked about a token, and no recent positive answer for it is cached."""

    error_type = "AuthenticationUnavailable"


@dataclass(frozen=True)
class _Verified:
    access: UserAccess
    at: float


class TokenAuthenticator:
    def __init__(
        self,
        authenticate: Callable[[str], UserAccess],
        fresh_s: float = DEFAULT_FRESH_S,
        stale_s: float = DEFAULT_STALE_S,
        refused_s: float = DEFAULT_REFUSED_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        if not 0 <= fresh_s <= stale_s:
            raise ValueError(f"token cache: need 0 <= fresh_s ({fresh_s}) <= stale_s ({stale_s})")
        self._authenticate = authenticate
        self._fresh_s = fresh_s
        self._stale_s = stale_s
        self._refused_s = refused_s
        self._max_entries = max_entries
        self._clock = clock
        self._retry_s = retry_s
        self._outage = Outage(log, "token checks", "using recent token checks", clock)
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, token: str) -> UserAccess | None:
        """The token's user and roles if a positive answer is fresh in the cache (what :meth:`authenticate` would
        return without asking the registry), else None. Never blocks on the registry: the event loop may call it."""
        key = token_digest(token)
        now = self._clock()
        with self._lock:
            cached = self._verified.get(key)
            if cached is not None and now - cached.at < self._fresh_s:
                self._verified.move_to_end(key)
                return cached.access
        return None

    def authenticate(self, token: str) -> UserAccess:
        """The token's user and roles; PermissionDenied when refused, AuthenticationUnavailable when unknowable."""
        key = token_digest(token)
        now = self._clock()
        with self._lock:
            cached = self._verified.get(key)
            if cached is not None and now - cached.at < self._fresh_s:
                self._verified.move_to_end(key)
                return cached.access
            refused_at = self._refused.get(key)
            if refused_at is not None and now - refused_at < self._refused_s:
                raise PermissionDenied(TOKEN_REFUSED)
        fallback = cached.access if cached is not None and now - cached.at < self._stale_s else None
        if fallback is not None and self._outage.failed_within(self._retry_s):
            return fallback  # the registry failed a moment ago: do not wait for it to fail again
        try:
            access = self._authenticate(token)
        except PermissionDenied:
            with self._lock:
                self._verified.pop(key, None)
                self._remember(self._refused, key, now)
            raise
        except EvolutionError:
            raise
        except Exception as error:  # the registry is unreachable (or failing): not a refusal
            self._outage.failed(error)  # logged once per outage
            if fallback is not None:
                return fallback
            raise AuthenticationUnavailable(
                "the registry cannot be reached to check the API token; retry shortly"
            ) from error
        self._outage.succeeded()
        with self._lock:
            self._refused.pop(key, None)
            self._remember(self._verified, key, _Verified(access, now))
        return access

    def _remember(self, cache: OrderedDict[str, _V], key: str, value: _V) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._max_entries:
            cache.popitem(last=False)
