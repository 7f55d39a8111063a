"""Running a command: settings validated, the host, the lock, the journal and
the log wired together, the plan checked, confirmed and applied. No CLI
here: the CLI calls these and renders what they return."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence

from frakti_install import config, joining, plans, runtimes
from frakti_install.config import Settings
from frakti_install.constants import ADMIN_CONF, KUBELET_CONF
from frakti_install.context import Context
from frakti_install.engine import Observer, Status, Step, StepResult, _quiet, first_error, run_plan
from frakti_install.errors import (
    Aborted,
    ConfigError,
    FraktiInstallError,
    InstallIncomplete,
    NotInstalled,
    NotRoot,
)
from frakti_install.host import Host
from frakti_install.steps.kubeadm_join import check_join_settings
from frakti_install.steps.preflight import check_settings_on_host

log = logging.getLogger("frakti_install")

Plan = Callable[[Context], List[Step]]


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

    @property
    def created_cluster(self) -> bool:
        """This run initialised the cluster (a re-run that changes nothing did not)."""
        return self.ok and any(step.created_cluster for step in self.steps)

    @property
    def drifted(self) -> List[str]:
        """The steps whose check found the host not as wanted (status, a dry run)."""
        return [s.name for s in self.steps if s.status in (Status.CHANGE, Status.FAIL)]

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


# --- settings -------------------------------------------------------------------
def load_settings(config_file: Optional[Path], flags: Dict[str, Any]) -> Settings:
    """The settings of a run: flags over config file over environment over defaults."""
    flags = dict(flags)
    for key in ("mirrors", "checksums", "key_fingerprints"):
        if flags.get(key):
            flags[key] = config.parse_pairs(flags[key], key.rstrip("s"))
    return runtimes.load_settings(config_file, flags)


def installed_settings(config_file: Optional[Path]) -> Settings:
    """Settings for a command about what is installed: the -c file, else the
    ones the last install recorded on this host, else the defaults. With -c the
    runtime is still the installed one unless the file or the environment names
    one: `allinone --runtime kata -c FILE` records kata, FILE need not say it."""
    defaults = load_settings(None, {})
    recorded_path = config.recorded_file(defaults.state_dir)
    text = new_context(defaults).host.read_text(recorded_path)
    if config_file is None:
        if text is None:
            return defaults
        return runtimes.load_settings(Path(recorded_path), {}, file_text=text)
    given = load_settings(config_file, {})
    if text is None or config.names_runtime(config_file):
        return given
    installed = runtimes.load_settings(Path(recorded_path), {}, file_text=text).runtime
    if installed == given.runtime:
        return given
    return load_settings(config_file, {"runtime": installed})


def check_join(settings: Settings) -> None:
    """The join parameters are well formed (ConfigError), checked before any change."""
    check_join_settings(settings.join_endpoint, settings.join_token, settings.join_ca_hash)


# --- what is installed here --------------------------------------------------------
INSTALL_COMMANDS = "'frakti-install allinone' (a master) or 'frakti-install node --join ...'"


def require_root(ctx: Context, command: str) -> None:
    """A command that changes the host stops here, before its lock, log or
    journal, when not run as root."""
    euid = ctx.facts.euid()
    if euid != "0":
        raise NotRoot(
            f"run as root: sudo {command} ... (this is uid {euid}; {command} changes the host)",
            hint="Nothing was changed. '--dry-run' shows the plan without root.",
        )


def require_install(ctx: Context, needs: Sequence[str] = ()) -> None:
    """An install ran here and left `needs` (target paths), at once: nothing
    installed (NotInstalled), or the steps an unfinished one has not done
    (InstallIncomplete). With `needs` empty: the install's settings record."""
    state_dir = ctx.settings.state_dir
    record = config.recorded_file(state_dir)
    present = [path for path in needs if ctx.host.exists(path)]
    if (present if needs else ctx.host.exists(record)):
        return
    progress = ctx.host.install_progress(f"{state_dir}/journal.jsonl")
    wanted = " or ".join(needs) if needs else record
    if progress is None:
        raise NotInstalled(
            f"nothing installed here: no install was recorded in {state_dir} "
            f"(and there is no {wanted})",
            hint=f"Install first: {INSTALL_COMMANDS}.",
        )
    not_done = progress.not_done
    raise InstallIncomplete(
        "the install on this host did not finish; steps not done yet: "
        + (", ".join(not_done) or "none (it stopped between two steps)"),
        not_done,
        hint="Run the same install command again (same -c file and flags) to finish it.",
    )


def require_master(ctx: Context) -> None:
    """join-command's host: the master (admin.conf), at once."""
    if ctx.host.exists(ADMIN_CONF):
        return
    if is_worker(ctx):
        raise NotInstalled(
            f"this host is a worker, not the master (it has {KUBELET_CONF}, no {ADMIN_CONF})",
            hint="Run join-command on the master, where 'frakti-install allinone' ran.",
        )
    require_install(ctx, needs=(ADMIN_CONF,))


# --- which plan -------------------------------------------------------------------
def is_worker(ctx: Context) -> bool:
    """A host that joined a cluster (kubelet.conf) without being its master (admin.conf)."""
    return ctx.host.exists(KUBELET_CONF) and not ctx.host.exists(ADMIN_CONF)


def installed_plan(ctx: Context) -> List[Step]:
    """The plan that made this host what it is: a worker's, or the master's."""
    return plans.node(ctx.runtime) if is_worker(ctx) else plans.allinone(ctx.runtime)


# --- offline bundles --------------------------------------------------------------
def bundled_runtime(settings: Settings) -> runtimes.Runtime:
    """The settings' runtime profile, if offline bundles carry its artifacts."""
    if not runtimes.runtime_class(settings.runtime).offline_bundles:
        carried = [cls.name for cls in runtimes.in_order() if cls.offline_bundles]
        raise ConfigError(
            f"offline bundles carry the {', '.join(carried)} profile's artifacts only"
        )
    return runtimes.runtime_for(settings)


@dataclass(frozen=True)
class BundleUse:
    """What a run takes from an offline bundle."""

    settings: Settings  # with the bundle's checksums
    downloader_factory: Callable[[], Any]  # serves its artifacts, nothing from the network
    package_files: Dict[str, Path]  # package name -> its verified file


def use_bundle(
    settings: Settings, path: Path, workdir: Path, host: Optional[Host] = None
) -> BundleUse:
    """Settings, a downloader and package files that take everything from an
    offline bundle, every file of it verified (before the first change)."""
    from frakti_install.bundle import Bundle, apply_to_settings

    runtime = bundled_runtime(settings)
    bundle = Bundle.open(path, workdir)
    probe = new_context(settings) if host is None else Context(host=host, settings=settings)
    bundle.check_compatible(
        settings.versions, probe.profile.package_format, probe.facts.arch(), runtime
    )
    bundle.verify()  # every artifact's and package file's sha256, before the first change
    return BundleUse(apply_to_settings(settings, bundle), bundle.downloader, bundle.package_files())


# --- running ---------------------------------------------------------------------
_LOGGED_TO = "frakti_install_log"  # set on an internal error whose traceback is in a log file


def traceback_log(error: BaseException) -> Optional[str]:
    """The log file that holds this internal error's traceback, if one does."""
    return getattr(error, _LOGGED_TO, None)


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
    except Exception as error:
        if not isinstance(error, FraktiInstallError):  # a bug: its traceback, for the report
            root_logger.exception("internal error")
            with contextlib.suppress(AttributeError):  # an exception class with __slots__
                setattr(error, _LOGGED_TO, str(path))
        raise
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
    state_dir = ctx.settings.state_dir
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(ctx.host.run_lock(f"{state_dir}/lock", ctx.settings.lock_wait))
            journal = ctx.host.open_journal(f"{state_dir}/journal.jsonl")
            stack.callback(journal.close)
            ctx.host.backup_dir = f"{state_dir}/backups/{journal.run_id}"
            ctx.host.on_change = lambda event: journal.record(**event)
            stack.callback(setattr, ctx.host, "on_change", None)
            ctx.host.note(event="run-start", command=[s.name for s in steps], pid=os.getpid())
        results = run_plan(steps, ctx, dry_run=dry_run, observer=observer, keep_going=dry_run)
        if not dry_run:
            ctx.host.note(event="run-end", ok=all(r.status is not Status.FAIL for r in results))
    return Report(os=os_summary(ctx), steps=results, dry_run=dry_run)


def raise_for(report: Report) -> None:
    error = first_error(report.steps)
    if error is not None:
        raise error


def run(
    plan: Plan,
    settings: Settings,
    *,
    dry_run: bool,
    confirm: Optional[Callable[[Report], bool]] = None,
    bundle: Optional[Path] = None,
    downloader_factory: Optional[Callable[[], Any]] = None,
    display: Optional[Any] = None,
    trace_only_changes: bool = False,
    command: str = "frakti-install",
) -> Report:
    """Plan, confirm (when `confirm` is given and something is to change), apply.

    display: the observer of the steps, a context manager while they run.
    trace_only_changes: check first, and write the log file and the journal
    only when something is to change (runs on a timer leave no trace).
    command: the command line's name, for the message that asks for root.
    A failed step is in the report; raise_for(report) raises it."""
    if not dry_run:
        require_root(new_context(settings), command)
    with ExitStack() as stack:

        def log_to_file() -> None:
            stack.enter_context(logging_to_file(Path(settings.log_file)))

        if not (dry_run or trace_only_changes):
            log_to_file()
        package_files: Dict[str, Path] = {}
        if bundle is not None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="frakti-install-"))
            used = use_bundle(settings, bundle, Path(workdir))
            settings, downloader_factory = used.settings, used.downloader_factory
            package_files = used.package_files
        ctx = new_context(settings, downloader_factory=downloader_factory)
        ctx.package_files = package_files
        ctx.profile  # noqa: B018  an unsupported OS stops here, before any step
        ctx.host.package_guard = ctx.packages.guard(settings.lock_wait)
        check_settings_on_host(ctx)  # before any step, the lock and the journal
        steps = plan(ctx)

        if not dry_run and (trace_only_changes or confirm is not None):
            checked = execute(steps, ctx, dry_run=True)
            raise_for(checked)
            if trace_only_changes and not checked.changed:
                return dataclasses.replace(checked, dry_run=False)  # checked: nothing to do
            if trace_only_changes:
                log_to_file()
            elif checked.changed and confirm is not None and not confirm(checked):
                raise Aborted("nothing was changed", hint="Run with --yes not to be asked.")
            ctx.facts.invalidate()

        shown: ContextManager[Any] = display if display is not None else contextlib.nullcontext()
        with shown:
            observer = display if display is not None else _quiet
            return execute(steps, ctx, dry_run=dry_run, observer=observer)


def join_line_after_init(report: Report, settings: Settings) -> Optional[str]:
    """The join line, made only by the run that initialised the cluster (a
    re-run changes nothing, so it creates no token either)."""
    if not report.created_cluster:
        return None
    return joining.create_join_line(new_context(settings)).command()
