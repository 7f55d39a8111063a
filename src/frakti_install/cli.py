"""The command line. Only this module and console.py know about typer and rich."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import typer

from frakti_install import __version__
from frakti_install.errors import Aborted, ExitCode, FraktiInstallError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Install Kubernetes with the frakti runtime (pods in lightweight VMs), idempotently.",
)

T = TypeVar("T")
LOG_FILE_HELP = "Full log of commands and their output"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"frakti-install {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


def _guard(func: Callable[[], T], *, as_json: bool = False, log_file: str = "") -> T:
    """The one place where errors become messages and exit codes."""
    from frakti_install import console

    try:
        return func()
    except FraktiInstallError as error:
        logging.getLogger("frakti_install").debug("error", exc_info=True)
        if as_json:  # stdout keeps one JSON document (the report, if any)
            typer.echo(
                json.dumps({"ok": False, "error": str(error), "exit_code": error.exit_code}),
                err=True,
            )
        else:
            console.error(error)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        console.error(Aborted("interrupted; run the same command again to finish"))
        raise typer.Exit(ExitCode.ABORTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as error:  # a bug: keep the traceback for the report
        logging.getLogger("frakti_install").exception("internal error")
        console.internal_error(error, log_file)
        raise typer.Exit(ExitCode.INTERNAL) from None


def _settings(config: Optional[Path], flags: Dict[str, Any]) -> Any:
    from frakti_install import config as config_module

    for key in ("mirrors", "checksums"):
        if flags.get(key):
            flags[key] = config_module.parse_pairs(flags[key], key.rstrip("s"))
    return config_module.load(config, flags)


ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="YAML file with any of the settings below.",
    exists=False,
    dir_okay=False,
)


@app.command()
def allinone(
    config: Optional[Path] = ConfigOpt,
    pod_cidr: Optional[str] = typer.Option(None, help="Cluster pod CIDR [10.244.0.0/16]."),
    node_subnet: Optional[str] = typer.Option(
        None, help="This node's pod subnet, inside the pod CIDR [10.244.1.0/24]."
    ),
    service_cidr: Optional[str] = typer.Option(None, help="Service CIDR [10.96.0.0/12]."),
    version_set: Optional[str] = typer.Option(
        None, help="A row of the compatibility table (frakti minor), e.g. 1.12."
    ),
    frakti_version: Optional[str] = typer.Option(None, help="Override frakti's version."),
    kubernetes_version: Optional[str] = typer.Option(None, help="Override Kubernetes' version."),
    hyperd_version: Optional[str] = typer.Option(None, help="Override hyperd's version."),
    cgroup_driver: Optional[str] = typer.Option(
        None, help="auto (docker's), cgroupfs or systemd; frakti and kubelet both use it."
    ),
    mirror: Optional[List[str]] = typer.Option(
        None, help="KIND=URL: download KIND (kubernetes, github, hyper) from URL. Repeatable."
    ),
    checksum: Optional[List[str]] = typer.Option(
        None, help="NAME=SHA256 for artifacts upstream publishes no sum for. Repeatable."
    ),
    allow_unverified: Optional[List[str]] = typer.Option(
        None, help="Accept an UNVERIFIED download of NAME (not recommended)."
    ),
    ignore_preflight_errors: Optional[List[str]] = typer.Option(
        None, help="Preflight checks (NAME,...) to turn into warnings, or 'all'."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before changing the host."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan or results as JSON."),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="Show commands as they run."
    ),
) -> None:
    """Turn this host into a one-node Kubernetes cluster running pods in VMs with frakti."""
    flags = dict(
        pod_cidr=pod_cidr,
        node_subnet=node_subnet,
        service_cidr=service_cidr,
        version_set=version_set,
        frakti_version=frakti_version,
        kubernetes_version=kubernetes_version,
        hyperd_version=hyperd_version,
        cgroup_driver=cgroup_driver,
        mirrors=mirror,
        checksums=checksum,
        allow_unverified=",".join(allow_unverified or ()) or None,
        ignore_preflight_errors=",".join(ignore_preflight_errors or ()) or None,
    )
    _guard(lambda: _allinone(config, flags, dry_run, yes, as_json, verbose), as_json=as_json)


def _allinone(
    config: Optional[Path],
    flags: Dict[str, Any],
    dry_run: bool,
    yes: bool,
    as_json: bool,
    verbose: int,
) -> None:
    from frakti_install import plans

    _run_plan(plans.allinone, _settings(config, flags), dry_run, yes, as_json, verbose)


def _run_plan(
    make_steps: Callable[[], List[Any]],
    settings: Any,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    verbose: int,
    question: str = "Apply these changes?",
) -> Any:
    """Plan, ask (unless --yes or nothing to do), apply, render; shared by the commands."""
    from frakti_install import console, session

    console.configure_logging(verbose, quiet=as_json)
    if not dry_run:
        session.log_to_file(Path(settings.log_file))
    ctx = session.new_context(
        settings, downloader_factory=console.downloader_factory(settings, quiet=as_json)
    )
    ctx.profile  # noqa: B018  an unsupported OS stops here, before any step
    steps = make_steps()

    if not dry_run and not yes:
        plan = session.execute(steps, ctx, dry_run=True)
        session.raise_for(plan)
        if plan.changed:
            console.show_plan(plan)
            if not console.confirm(question):
                raise Aborted("nothing was changed", hint="Run with --yes to skip the question.")
        ctx.facts.invalidate()

    observer = console.null_observer if as_json else console.StepProgress(dry_run)
    with observer:
        report = session.execute(steps, ctx, dry_run=dry_run, observer=observer)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console.recap(report, settings.log_file)
    session.raise_for(report)
    return report


@app.command()
def reset(
    config: Optional[Path] = ConfigOpt,
    purge: bool = typer.Option(False, "--purge", help="Also remove the packages it installed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan or results as JSON."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Show commands."),
) -> None:
    """Undo what frakti-install did: cluster, services, files (originals restored), rules."""

    def _reset() -> None:
        from frakti_install import plans

        _run_plan(
            lambda: plans.reset(purge),
            _settings(config, {}),
            dry_run,
            yes,
            as_json,
            verbose,
            question="Tear down the cluster and undo these changes?",
        )

    _guard(_reset, as_json=as_json)


@app.command()
def status(
    config: Optional[Path] = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Check every step of allinone without changing anything; exit 11 on drift."""

    def _status() -> None:
        from frakti_install import plans
        from frakti_install.errors import Drift

        report = _run_plan(plans.allinone, _settings(config, {}), True, True, as_json, 0)
        drifted = [step.name for step in report.steps if step.status.value in ("change", "fail")]
        if drifted:
            raise Drift(
                "drift in: " + ", ".join(drifted),
                hint="'frakti-install allinone' puts it right ('--dry-run' shows how).",
            )

    _guard(_status, as_json=as_json)


@app.command()
def info(
    config: Optional[Path] = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """What frakti-install sees on this host (read-only; works on any Linux)."""

    def _info() -> None:
        from frakti_install import console, inspect, session

        settings = _settings(config, {})
        data = inspect.host_info(session.new_context(settings))
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            console.show_info(data)

    _guard(_info, as_json=as_json)


def main() -> None:
    app(prog_name="frakti-install")


if __name__ == "__main__":  # pragma: no cover
    main()
