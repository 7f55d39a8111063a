"""The step engine: steps compare facts with the desired state and return the
actions that close the gap; the runner applies them under a lock, verifies,
journals, and reports results as data.

    check(ctx) -> Check(actions=[...]) | Check.ok("reason")
    apply      =  each action's apply(ctx), then facts are re-read
    verify(ctx)-> raises VerifyFailed; by default: check again, expect no actions
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from frakti_install.errors import FraktiInstallError, VerifyFailed

if TYPE_CHECKING:
    from frakti_install.context import Context


class Status(str, Enum):
    OK = "ok"
    CHANGE = "change"
    SKIP = "skip"
    FAIL = "fail"


class Action:
    """One change to the host. Subclasses live in actions.py."""

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Check:
    """A step's verdict: the actions still needed, or why nothing is."""

    actions: Sequence[Action] = ()
    reason: str = ""
    skip: bool = False

    @classmethod
    def ok(cls, reason: str) -> Check:
        return cls(reason=reason)

    @classmethod
    def skipped(cls, reason: str) -> Check:
        return cls(reason=reason, skip=True)

    @property
    def needed(self) -> bool:
        return bool(self.actions)


class Step:
    name = "step"
    title = "a step"
    # A step whose desired state is only known once its first actions ran
    # (the pod subnet the cluster allocates after the node registers), or
    # moves while it runs (other nodes joining), checks and applies again,
    # up to this many rounds, before verifying.
    rounds = 1
    # Its change is the making of the cluster (kubeadm init): the run that
    # applied it prints the join line.
    creates_cluster = False

    def check(self, ctx: Context) -> Check:
        raise NotImplementedError

    def verify(self, ctx: Context) -> None:
        """After apply: the host must now be in the desired state."""
        again = self.check(ctx)
        if again.needed:
            raise VerifyFailed(
                f"{self.name}: still not in the desired state after applying changes: "
                + "; ".join(action.describe() for action in again.actions)
            )


@dataclass(frozen=True)
class StepResult:
    name: str
    status: Status
    detail: str
    changes: List[str] = field(default_factory=list)
    seconds: float = 0.0
    error: Optional[FraktiInstallError] = None
    created_cluster: bool = False  # applied a step that creates the cluster

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "changes": list(self.changes),
            "seconds": round(self.seconds, 3),
        }


class Event:
    """What the runner tells its observer (the CLI's progress display)."""

    STEP_STARTED = "step-started"
    STEP_FINISHED = "step-finished"
    ACTION = "action"


Observer = Callable[[str, str, object], None]  # (event, step name, payload)


def _quiet(event: str, step: str, payload: object) -> None:
    pass


def run_plan(
    steps: Sequence[Step],
    ctx: Context,
    *,
    dry_run: bool = False,
    observer: Observer = _quiet,
    keep_going: bool = False,
) -> List[StepResult]:
    """Run (or, with dry_run, only check) the steps in order.

    A failure stops the run unless keep_going (dry-run and status use it, to
    show the whole plan). Results are returned; the first error is re-raised
    by the caller through `first_error`.
    """
    results: List[StepResult] = []
    for step in steps:
        observer(Event.STEP_STARTED, step.name, step.title)
        ctx.host.note(step=step.name, event="start")
        started = time.monotonic()
        try:
            result = _run_step(step, ctx, dry_run, observer)
        except FraktiInstallError as error:
            result = StepResult(step.name, Status.FAIL, error.message, error=error)
        result = dataclasses.replace(result, seconds=time.monotonic() - started)
        ctx.host.note(
            step=step.name, event=result.status.value, detail=result.detail, changes=result.changes
        )
        observer(Event.STEP_FINISHED, step.name, result)
        results.append(result)
        if result.status is Status.FAIL and not keep_going:
            break
    return results


def _run_step(step: Step, ctx: Context, dry_run: bool, observer: Observer) -> StepResult:
    check = step.check(ctx)
    if check.skip:
        return StepResult(step.name, Status.SKIP, check.reason)
    if not check.needed:
        return StepResult(step.name, Status.OK, check.reason)
    descriptions = [action.describe() for action in check.actions]
    if dry_run:
        return StepResult(
            step.name, Status.CHANGE, "would: " + "; ".join(descriptions), descriptions
        )
    applied: List[str] = []
    for round_number in range(step.rounds):
        if round_number:
            check = step.check(ctx)
            if not check.needed:
                break
            descriptions = [action.describe() for action in check.actions]
        for action, description in zip(check.actions, descriptions):
            observer(Event.ACTION, step.name, description)
            ctx.host.note(step=step.name, event="action", action=description)
            action.apply(ctx)
        applied += descriptions
        ctx.facts.invalidate()
    step.verify(ctx)
    return StepResult(
        step.name,
        Status.CHANGE,
        "; ".join(applied),
        applied,
        created_cluster=step.creates_cluster,
    )


def first_error(results: Sequence[StepResult]) -> Optional[FraktiInstallError]:
    for result in results:
        if result.error is not None:
            return result.error
    return None
