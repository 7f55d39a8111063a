"""poll_until: one wait loop, timed by an injected clock (these tests never sleep)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import pytest

from frakti_install.errors import Locked, VerifyFailed
from frakti_install.polling import NotYet, PollTimeout, poll_until
from frakti_install.state import RunLock


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: List[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_success_returns_the_value_without_sleeping() -> None:
    t = FakeTime()
    assert poll_until(lambda: "ready", timeout=10, interval=2, what="x",
                      clock=t.clock, sleep=t.sleep) == "ready"
    assert t.sleeps == []


def test_returns_the_first_truthy_answer_after_some_tries() -> None:
    t = FakeTime()
    answers = [None, False, NotYet("booting"), {"node": "up"}]
    result = poll_until(lambda: answers.pop(0), timeout=60, interval=2, what="x",
                        clock=t.clock, sleep=t.sleep)
    assert result == {"node": "up"}
    assert t.sleeps == [2, 2, 2]


def test_timeout_raises_the_given_error_after_the_right_number_of_tries() -> None:
    t = FakeTime()
    tries: List[float] = []

    def never() -> Optional[str]:
        tries.append(t.now - 1000.0)
        return None

    with pytest.raises(RuntimeError, match="gave up"):
        poll_until(never, timeout=10, interval=2, what="x",
                   on_timeout=lambda detail: RuntimeError("gave up"),
                   clock=t.clock, sleep=t.sleep)
    # asked at once, every 2 s, and once more at the deadline
    assert tries == [0, 2, 4, 6, 8, 10]


def test_the_last_try_is_at_the_deadline_not_an_interval_later() -> None:
    t = FakeTime()
    tries: List[float] = []

    def never() -> None:
        tries.append(t.now - 1000.0)

    with pytest.raises(PollTimeout):
        poll_until(never, timeout=5, interval=2, what="x", clock=t.clock, sleep=t.sleep)
    assert tries == [0, 2, 4, 5]
    assert t.sleeps == [2, 2, 1]


def test_zero_timeout_asks_once() -> None:
    t = FakeTime()
    calls: List[int] = []
    with pytest.raises(PollTimeout):
        poll_until(lambda: calls.append(1), timeout=0, interval=1, what="x",
                   clock=t.clock, sleep=t.sleep)
    assert calls == [1] and t.sleeps == []


def test_default_error_is_a_verify_failure_saying_what_and_how_long() -> None:
    t = FakeTime()
    with pytest.raises(VerifyFailed) as info:
        poll_until(lambda: False, timeout=30, interval=0.5, what="kubelet is not active",
                   clock=t.clock, sleep=t.sleep)
    assert isinstance(info.value, PollTimeout)
    assert info.value.message == "kubelet is not active (waited 30 s)"
    assert info.value.tries == 61


def test_not_yet_detail_reaches_the_error() -> None:
    t = FakeTime()
    details = iter(["no service account yet", "admission webhook down"])
    with pytest.raises(VerifyFailed, match="not admitted: admission webhook down") as info:
        poll_until(lambda: NotYet(next(details)), timeout=2, interval=2, what="x",
                   on_timeout=lambda detail: VerifyFailed(f"not admitted: {detail}", hint="h"),
                   clock=t.clock, sleep=t.sleep)
    assert info.value.hint == "h"
    with pytest.raises(PollTimeout, match=r"^pod admitted \(waited 0 s\): nope$"):
        poll_until(lambda: NotYet("nope"), timeout=0, interval=1, what="pod admitted",
                   clock=t.clock, sleep=t.sleep)
    assert not NotYet("x") and repr(NotYet("x")) == "NotYet('x')"


def test_before_each_runs_before_every_try() -> None:
    t = FakeTime()
    events: List[str] = []
    answers = iter([False, False, True])

    def condition() -> bool:
        events.append("ask")
        return next(answers)

    assert poll_until(condition, timeout=10, interval=1, what="x",
                      before_each=lambda: events.append("invalidate"),
                      clock=t.clock, sleep=t.sleep) is True
    assert events == ["invalidate", "ask"] * 3


def test_errors_from_the_condition_propagate_at_once() -> None:
    t = FakeTime()

    def broken() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        poll_until(broken, timeout=10, interval=1, what="x", clock=t.clock, sleep=t.sleep)
    assert t.sleeps == []


# --------------------------------------------------------------------------- RunLock


def test_run_lock_waits_warns_once_then_says_who_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "lock"
    with RunLock(path):
        t = FakeTime()
        with caplog.at_level(logging.WARNING, logger="frakti_install.state"), pytest.raises(
            Locked
        ) as info:
            RunLock(path, wait=2, clock=t.clock, sleep=t.sleep).__enter__()
        assert f"(pid {os.getpid()}) holds {path}" in info.value.message
        assert "Wait for it to finish" in info.value.hint
        assert t.sleeps == [0.25] * 8
        warnings = [r for r in caplog.records if "waiting for another" in r.getMessage()]
        assert len(warnings) == 1


def test_run_lock_without_wait_fails_at_once_without_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lock"
    with RunLock(path):
        t = FakeTime()
        with caplog.at_level(logging.WARNING), pytest.raises(Locked):
            RunLock(path, clock=t.clock, sleep=t.sleep).__enter__()
        assert t.sleeps == [] and not caplog.records


def test_run_lock_is_taken_once_the_other_run_ends(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    other = RunLock(path).__enter__()
    t = FakeTime()

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        if t.now - 1000.0 >= 1:
            other.__exit__(None, None, None)

    with RunLock(path, wait=60, clock=t.clock, sleep=sleep) as lock:
        assert lock._fd is not None
        assert path.read_text() == str(os.getpid())
    assert t.sleeps == [0.25] * 4
