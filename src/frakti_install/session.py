"""Running a plan for real or as a dry run: wiring the host, the journal, the
lock and the log together. No CLI here: the CLI calls these and renders."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from frakti_install.config import Settings
from frakti_install.context import ADMIN_CONF, Context
from frakti_install.engine import Observer, Status, Step, StepResult, _quiet, first_error, run_plan
from frakti_install.host import Host
from frakti_install.state import Journal, RunLock

log = logging.getLogger("frakti_install")


@dataclass(frozen=True)
class Report:
    """The outcome of a run, as data for the CLI to render (text or JSON)."""

    os: Dict[str, Any]
    steps: List[StepResult]
    dry_run: bool

    @property
    def ok(self) -> bool:
        return all(step.status is not Status.FAIL for step in self.steps)

    @property
    def changed(self) -> bool:
        return any(step.status is Status.CHANGE for step in self.steps)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "os": self.os,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "changed": self.changed,
            "steps": [step.as_dict() for step in self.steps],
        }


def os_summary(ctx: Context) -> Dict[str, Any]:
    info = ctx.facts.os()
    return {
        "id": info.id,
        "version": info.version,
        "family": info.family,
        "supported": info.supported,
        "name": info.pretty_name,
    }


def new_context(
    settings: Settings, downloader_factory: Optional[Callable[[], Any]] = None
) -> Context:
    host = Host(secrets=[secret for secret in (settings.join_token,) if secret])
    return Context(host=host, settings=settings, downloader_factory=downloader_factory)


def is_worker() -> bool:
    """A host that joined a cluster (kubelet.conf) without being its master (admin.conf)."""
    host = Host()
    return host.exists("/etc/kubernetes/kubelet.conf") and not host.exists(ADMIN_CONF)


def use_bundle(settings: Settings, path: Path, workdir: Path) -> Tuple[Settings, Callable[[], Any]]:
    """Settings and a downloader that take every artifact from an offline bundle."""
    from frakti_install.bundle import Bundle, apply_to_settings

    bundle = Bundle.open(path, workdir)
    probe = new_context(settings)
    bundle.check_compatible(settings.versions, probe.profile.package_format, probe.facts.arch())
    return apply_to_settings(settings, bundle), bundle.downloader


@contextmanager
def logging_to_file(path: Path) -> Iterator[None]:
    """Send the full debug log (commands and their output, redacted) to a 0600
    file while the block runs; without the file if it cannot be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        yield
        return
    handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    root_logger = logging.getLogger("frakti_install")
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root_logger.removeHandler(handler)
        handler.close()


def execute(
    steps: Sequence[Step],
    ctx: Context,
    *,
    dry_run: bool,
    observer: Observer = _quiet,
) -> Report:
    """Check (dry run) or apply the steps. Raises nothing for step failures:
    they are in the report; `raise_for(report)` turns them into the error."""
    state_dir = Path(ctx.host.path(ctx.settings.state_dir))
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(RunLock(state_dir / "lock", ctx.settings.lock_wait))
            ctx.journal = Journal(state_dir / "journal.jsonl")
            stack.callback(ctx.journal.close)
            ctx.host.backup_dir = f"{ctx.settings.state_dir}/backups/{ctx.journal.run_id}"
            ctx.host.on_change = lambda event: ctx.journal.record(event="file", **event)
            ctx.journal.record(event="run-start", command=[s.name for s in steps], pid=os.getpid())
        results = run_plan(steps, ctx, dry_run=dry_run, observer=observer, keep_going=dry_run)
        if not dry_run:
            ctx.journal.record(
                event="run-end", ok=all(r.status is not Status.FAIL for r in results)
            )
    return Report(os=os_summary(ctx), steps=results, dry_run=dry_run)


def raise_for(report: Report) -> None:
    error = first_error(report.steps)
    if error is not None:
        raise error
