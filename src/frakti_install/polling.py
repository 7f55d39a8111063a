"""Waiting for something to become true: one loop for every wait.

A node to register, the API server to admit a pod, another run to release
the lock: :func:`poll_until` asks, sleeps, asks again, and gives up with an
error that says what it waited for. The clock and the sleep are parameters,
so tests run instantly.

Stdlib and frakti_install.errors only.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar, Union

from frakti_install.errors import VerifyFailed

__all__ = ["NotYet", "PollTimeout", "poll_until"]

T = TypeVar("T")


class NotYet:
    """A condition's answer "not yet", with why (for the error on a timeout).

    Falsy, so a condition may return it where it would return None or False.
    """

    __slots__ = ("detail",)

    def __init__(self, detail: str = "") -> None:
        self.detail = detail

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NotYet({self.detail!r})"


class PollTimeout(VerifyFailed):
    """poll_until's error when no on_timeout is given: "<what> (waited N s)"."""

    def __init__(self, what: str, timeout: float, tries: int, detail: str = "") -> None:
        self.what = what
        self.timeout = timeout
        self.tries = tries
        self.detail = detail
        message = f"{what} (waited {timeout:.0f} s)"
        super().__init__(f"{message}: {detail}" if detail else message)


def poll_until(
    condition: Callable[[], Union[T, NotYet, None]],
    *,
    timeout: float,
    interval: float,
    what: str,
    on_timeout: Optional[Callable[[str], BaseException]] = None,
    before_each: Optional[Callable[[], None]] = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``condition`` until it returns something truthy; return that.

    Each round calls ``before_each`` first (e.g. ``ctx.facts.invalidate`` so
    the condition sees fresh facts), then ``condition``. A falsy answer
    (None, False, or a NotYet carrying why) means "not yet": the loop sleeps
    ``interval`` seconds (less when the deadline is nearer) and asks again.
    The condition is always asked at least once, and once more at the
    deadline. A ``timeout`` of 0 asks exactly once.

    When the deadline has passed it raises ``on_timeout(detail)`` (detail:
    the last NotYet's text, "" otherwise), or PollTimeout(what, ...) (a
    VerifyFailed) without on_timeout. Exceptions from ``condition`` and
    ``before_each`` propagate at once.
    """
    deadline = clock() + timeout
    tries = 0
    while True:
        if before_each is not None:
            before_each()
        result = condition()
        tries += 1
        if result:
            return result  # type: ignore[return-value]  # truthy: not NotYet or None
        detail = result.detail if isinstance(result, NotYet) else ""
        now = clock()
        if now >= deadline:
            if on_timeout is not None:
                raise on_timeout(detail)
            raise PollTimeout(what, timeout, tries, detail)
        sleep(min(interval, deadline - now))
