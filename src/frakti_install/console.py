"""Rendering for people: progress while steps run, the recap, errors, info."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from frakti_install.engine import Event, Status, StepResult
from frakti_install.errors import FraktiInstallError

out = Console()
err = Console(stderr=True)

STYLE = {Status.OK: "green", Status.CHANGE: "yellow", Status.SKIP: "dim", Status.FAIL: "bold red"}
WORD = {Status.OK: "ok", Status.CHANGE: "changed", Status.SKIP: "skipped", Status.FAIL: "FAILED"}


def configure_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    handler.setLevel(logging.ERROR if quiet else level)
    logger = logging.getLogger("frakti_install")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def error(exc: FraktiInstallError) -> None:
    # The message may quote what the user typed: printed as text, never as markup.
    err.print(Text.assemble(("error: ", "bold red"), exc.message), highlight=False)
    if exc.hint:
        err.print(Text(exc.hint, style="dim"), highlight=False)


def internal_error(exc: BaseException, log_file: Optional[str] = None) -> None:
    """log_file: where the traceback was written; None: it was shown above instead."""
    err.print(Text.assemble(("internal error: ", "bold red"), repr(exc)), highlight=False)
    where = f"the traceback is in {log_file}" if log_file else "the traceback is above"
    err.print(Text(f"This is a bug in frakti-install; {where}."), highlight=False)


def next_steps(join_line: Optional[str]) -> None:
    """After allinone: how to add workers. The line holds a secret token: shown
    here once, for the operator, and never logged."""
    if join_line:
        out.print("Add a worker: run this on it (the token is valid for 24 h):", highlight=False)
        out.print(join_line, markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(
            "Add a worker: run [bold]frakti-install join-command[/] here and the line it "
            "prints on the worker.",
            highlight=False,
        )


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return out.input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


class _NullObserver:
    def __call__(self, event: str, step: str, payload: object) -> None:
        pass

    def __enter__(self) -> _NullObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass



class StepProgress(_NullObserver):
    """A spinner per running step with its time; a line per finished step."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=out,
            transient=True,
        )
        self.task: Optional[Any] = None

    def __enter__(self) -> StepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: str, step: str, payload: object) -> None:
        if event == Event.STEP_STARTED:
            self.task = self.progress.add_task(f"[bold]{step}[/] {payload}")
        elif event == Event.ACTION:
            self.progress.console.print(f"    [dim]{step}:[/] {payload}", highlight=False)
        elif event == Event.STEP_FINISHED and isinstance(payload, StepResult) and self.dry_run:
            if self.task is not None:  # the plan table says the rest
                self.progress.remove_task(self.task)
        elif event == Event.STEP_FINISHED and isinstance(payload, StepResult):
            if self.task is not None:
                self.progress.remove_task(self.task)
            word = (
                "would change"
                if self.dry_run and payload.status is Status.CHANGE
                else WORD[payload.status]
            )
            style = STYLE[payload.status]
            self.progress.console.print(
                f"[{style}]{word:>12}[/] [bold]{step}[/] ({payload.seconds:.1f}s)", highlight=False
            )


def _what(step: StepResult, listed_above: bool = False) -> str:
    if step.status is Status.CHANGE:
        if listed_above:
            return f"{len(step.changes)} change(s), listed above"
        return "\n".join(step.changes)
    if step.status is Status.FAIL:
        return step.detail.splitlines()[0]
    return step.detail


def show_plan(report: Any) -> None:
    table = Table(title="Plan", show_lines=False)
    table.add_column("step")
    table.add_column("status")
    table.add_column("what", overflow="fold")
    for step in report.steps:
        word = "would change" if step.status is Status.CHANGE else WORD[step.status]
        table.add_row(step.name, f"[{STYLE[step.status]}]{word}[/]", _what(step))
    out.print(table)


def recap(report: Any, log_file: str, changes_shown: bool = True) -> None:
    """The end-of-run table; changes are listed in it unless the progress
    display has already shown them."""
    table = Table(title="Dry run: nothing was changed" if report.dry_run else "Recap")
    table.add_column("step")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("what", overflow="fold")
    for step in report.steps:
        word = (
            "would change" if report.dry_run and step.status is Status.CHANGE else WORD[step.status]
        )
        table.add_row(
            step.name,
            f"[{STYLE[step.status]}]{word}[/]",
            f"{step.seconds:.1f}s",
            _what(step, listed_above=changes_shown and not report.dry_run),
        )
    out.print(table)
    if not report.dry_run:
        changed = sum(1 for s in report.steps if s.status is Status.CHANGE)
        out.print(
            f"{changed} step(s) changed the host; log: {log_file}"
            if changed
            else "Nothing to change: the host is already as configured."
        )


def show_info(data: Dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    os_info = data["os"]
    supported = "[green]supported[/]" if os_info["supported"] else "[red]not supported[/]"
    table.add_row(
        "OS",
        f"{os_info['name']} (id {os_info['id']}, version {os_info['version']}, "
        f"family {os_info['family'] or '-'}) {supported}",
    )
    table.add_row("architecture", data["arch"])
    table.add_row("package manager", str(data["package_manager"] or "-"))
    table.add_row("init system", data["init_system"])
    table.add_row("cgroup version", str(data["cgroup_version"]))
    virt = data["virtualization"]
    table.add_row(
        "virtualisation",
        f"CPU flag {'yes' if virt['cpu_flag'] else 'no'}, "
        f"/dev/kvm {'present' if virt['dev_kvm'] else 'absent'}, "
        f"KVM {'usable' if virt['kvm_usable'] else '[yellow]not usable[/]'}",
    )
    fit = data["profile_fit"]
    table.add_row("runtime profile", f"{fit['recommended']} ({fit['why']})")
    table.add_row("docker cgroup driver", str(data["docker_cgroup_driver"] or "- (no docker)"))
    table.add_row("swap", "on" if data["swap"] else "off")
    table.add_row("CPUs / memory", f"{data['cpus']} / {data['memory_mb']} MB")
    table.add_row("would install", ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    for name, how in data.get("verified_with", {}).items():
        table.add_row(f"  {name}", Text(how))  # verified with: which hash, from where
    table.add_row("Kubernetes (kata)", "minor, latest patch, end of life")
    for row in data.get("kata_kubernetes_releases", []):
        status = "supported" if row["status"] == "supported" else "[red]end of life[/]"
        mark = " [bold](default)[/]" if row["default"] else ""
        table.add_row(f"  {row['minor']}", f"{row['latest_patch']}, {row['eol']}, {status}{mark}")
    out.print(table)


def downloader_factory(settings: Any, progress: Optional[StepProgress]) -> Callable[[], Any]:
    """A Downloader whose progress shows as a line per file in the step display
    (one live display: rich allows no second one beside it)."""

    def make() -> Any:
        from frakti_install.download import Downloader
        from frakti_install.download import Progress as DownloadProgress

        tasks: Dict[str, Any] = {}

        def on_progress(event: DownloadProgress) -> None:
            if progress is None:
                return
            bar = progress.progress
            size = f"{event.total / 1e6:.1f} MB" if event.total else "?"
            text = f"    download {event.name}: {event.done / 1e6:.1f} of {size}"
            if event.url not in tasks:
                tasks[event.url] = bar.add_task(text)
            bar.update(tasks[event.url], description=text)
            if event.total is not None and event.done >= event.total:
                bar.remove_task(tasks.pop(event.url))

        return Downloader(Path(settings.cache_dir), on_progress=on_progress)

    return make


def show_verify(data: Dict[str, Any]) -> None:
    """`verify`'s report (VerifyReport.as_dict()): each node's checks, then the verdict."""
    marks = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "[dim]?[/]"}
    for node in data["nodes"]:
        where = " (this host)" if node["local"] else ""
        verdict = "[green]isolates pods in VMs[/]" if node["ok"] else "[red]does not isolate[/]"
        out.print(f"[bold]{node['node']}[/]{where}: {verdict}")
        for check in node["checks"]:
            mark = marks[check["ok"]]
            if check["ok"] is False and not check.get("blocking", True):
                mark = "[yellow]warn[/]"
            out.print(f"  {mark} {check['name']}: ", end="")
            out.print(check["detail"], markup=False, highlight=False)
            if check["ok"] is False and check.get("fix"):
                out.print("       fix: ", end="", style="dim")
                out.print(check["fix"], markup=False, highlight=False, style="dim")
    if data["kept"]:
        out.print("kept (--keep): " + " ".join(data["kept"]), markup=False, highlight=False)
    if data.get("cleanup_error"):
        out.print(f"[yellow]could not delete the verify pods:[/] {data['cleanup_error']}")
    total, good = len(data["nodes"]), sum(1 for node in data["nodes"] if node["ok"])
    colour = "green" if data["ok"] else "red"
    out.print(f"[{colour}]{good} of {total} node(s) run pods in VMs ({data['runtime']} profile)[/]")
