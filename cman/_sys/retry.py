"""Bounded retries with backoff, for idempotent engine calls only.

A create or a run is never wrapped: retrying it blindly could make two
containers. Reads (list, inspect, history, logs without follow) and calls whose
repetition is harmless (start, stop) may be. tenacity is imported on the first
retried call, not at start-up: ``cman ps`` should not pay for it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

ATTEMPTS = 4
"""At most 4 tries: about 0.2 + 0.4 + 0.8 s of waiting, so a restarting daemon gets ~1.5 s."""


def idempotent(is_transient: Callable[[BaseException], bool]) -> Callable[[F], F]:
    """Decorate an idempotent call so transient engine errors are retried."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
            # The first try failed transiently: only now pay for tenacity.
            from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

            retrying = Retrying(
                retry=retry_if_exception(is_transient),
                stop=stop_after_attempt(ATTEMPTS - 1),
                wait=wait_exponential(multiplier=0.2, min=0.2, max=2.0),
                reraise=True,
                sleep=time.sleep,
            )
            time.sleep(0.2)
            return retrying(fn, *args, **kwargs)

        return cast(F, call)

    return wrap
