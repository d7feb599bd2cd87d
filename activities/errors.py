"""Maps domain errors to non-retryable ApplicationErrors; anything else stays transient and is retried."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.exceptions import ApplicationError

from evolution.errors import EvolutionError

F = TypeVar("F", bound=Callable[..., Any])


def to_application_error(error: EvolutionError) -> ApplicationError:
    return ApplicationError(str(error), type=error.error_type, non_retryable=True)


def domain_errors_are_final(fn: F) -> F:
    """Decorate an activity so that a domain error fails it at once instead of being retried."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except EvolutionError as error:
                raise to_application_error(error) from error

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EvolutionError as error:
            raise to_application_error(error) from error

    return wrapper  # type: ignore[return-value]
