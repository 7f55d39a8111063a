"""The command line. Only this module and console.py know about typer and rich."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import typer

from frakti_install import __version__
from frakti_install.errors import Aborted, ExitCode, FraktiInstallError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Install Kubernetes with the frakti runtime (pods in lightweight VMs), idempotently.",
)
bundle_app = typer.Typer(no_args_is_help=True, help="Offline bundles for air-gapped hosts.")
app.add_typer(bundle_app, name="bundle")

T = TypeVar("T")


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


def _guard(func: Callable[[], T], *, as_json: bool = False) -> T:
    """The one place where errors become messages and exit codes."""
    from frakti_install import console
    from frakti_install.host import terminate_as_interrupt

    try:
        with terminate_as_interrupt():
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
    except PermissionError as error:
        if os.geteuid() == 0:
            return _internal(error)
        from frakti_install.errors import NotRoot

        reason = f"{error.filename}: {error.strerror}"
        console.error(NotRoot(f"run as root: sudo frakti-install ... ({reason})"))
        raise typer.Exit(ExitCode.NOT_ROOT) from None
    except Exception as error:
        return _internal(error)


def _internal(error: Exception) -> typing.NoReturn:
    """A bug: its traceback is in the log file if the run wrote one, else shown here."""
    from frakti_install import console, session

    written = session.traceback_log(error)
    if written is None:
        logging.getLogger("frakti_install").error("internal error", exc_info=error)
    console.internal_error(error, written)
    raise typer.Exit(ExitCode.INTERNAL) from None


# --- options shared by the commands ------------------------------------------
ConfigOpt = typer.Option(
    None, "--config", "-c", help="YAML file with any of the settings.", dir_okay=False
)
InstalledConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="YAML file with any of the settings (default: those the last install recorded).",
    dir_okay=False,
)
PodCidrOpt = typer.Option(None, "--pod-cidr", help="Cluster pod CIDR (default 10.244.0.0/16).")
NodeSubnetOpt = typer.Option(
    None,
    "--node-subnet",
    help="This node's pod subnet (default auto: the /24 the cluster allocates).",
)
ServiceCidrOpt = typer.Option(None, "--service-cidr", help="Service CIDR (default 10.96.0.0/12).")
VersionSetOpt = typer.Option(
    None, "--version-set", help="A row of the compatibility table (frakti minor), e.g. 1.12."
)
FraktiVersionOpt = typer.Option(None, "--frakti-version", help="Override frakti's version.")
KubeVersionOpt = typer.Option(None, "--kubernetes-version", help="Override Kubernetes' version.")
HyperdVersionOpt = typer.Option(None, "--hyperd-version", help="Override hyperd's version.")
KataVersionOpt = typer.Option(
    None, "--kata-version", help="Kata Containers release for the kata profile (e.g. 3.32.0)."
)
CgroupDriverOpt = typer.Option(
    None, "--cgroup-driver", help="auto (docker's), cgroupfs or systemd; for frakti and kubelet."
)
MirrorOpt = typer.Option(
    None,
    "--mirror",
    help="KIND=URL: download KIND (kubernetes, github, hyper, kubernetes-pkgs) from URL.",
)
KeyFingerprintOpt = typer.Option(
    None,
    "--key-fingerprint",
    help="NAME=FINGERPRINT: trust this key for NAME (a mirror signing with its own key).",
)
RuntimeOpt = typer.Option(
    None,
    "--runtime",
    help="frakti (default: hyperd VMs, Kubernetes 1.12, cgroup v1 hosts) or kata "
    "(containerd + Kata Containers on a supported Kubernetes; cgroup v2 is fine).",
)
ChecksumOpt = typer.Option(
    None, "--checksum", help="NAME=SHA256 for artifacts upstream publishes no sum for."
)
AllowUnverifiedOpt = typer.Option(
    None, "--allow-unverified", help="Accept an UNVERIFIED download of NAME (not recommended)."
)
IgnorePreflightOpt = typer.Option(
    None, "--ignore-preflight-errors", help="Preflight checks (NAME,...) to only warn about."
)
AllowEolOpt = typer.Option(
    None, "--allow-eol", help="Install a Kubernetes release past its end of life (kata)."
)
DisableSwapOpt = typer.Option(None, "--disable-swap", help="Turn swap off now and in /etc/fstab.")
AdvertiseOpt = typer.Option(
    None, "--advertise-address", help="The API server's address (default: the default route's)."
)
NodeIpOpt = typer.Option(None, "--node-ip", help="This node's address for kubelet.")
BundleOpt = typer.Option(
    None, "--bundle", help="Install from an offline bundle (file or unpacked directory)."
)
DryRunOpt = typer.Option(False, "--dry-run", help="Show the plan; change nothing.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask before changing the host.")
JsonOpt = typer.Option(False, "--json", help="Print the plan or results as JSON.")
VerboseOpt = typer.Option(0, "--verbose", "-v", count=True, help="Show commands as they run.")


def _flags(**values: Any) -> Dict[str, Any]:
    """Command-line values as settings (None = not given)."""
    for key in ("allow_unverified", "ignore_preflight_errors"):
        values[key] = ",".join(values.get(key) or ()) or None
    return values


# The settings every node takes, master or worker: one list for allinone and
# node (and whatever installs a node next). Each becomes a keyword parameter.
NODE_OPTIONS: Dict[str, Tuple[Any, Any]] = {
    "config": (Optional[Path], ConfigOpt),
    "runtime": (Optional[str], RuntimeOpt),
    "key_fingerprint": (Optional[List[str]], KeyFingerprintOpt),
    "pod_cidr": (Optional[str], PodCidrOpt),
    "node_subnet": (Optional[str], NodeSubnetOpt),
    "service_cidr": (Optional[str], ServiceCidrOpt),
    "version_set": (Optional[str], VersionSetOpt),
    "frakti_version": (Optional[str], FraktiVersionOpt),
    "kubernetes_version": (Optional[str], KubeVersionOpt),
    "hyperd_version": (Optional[str], HyperdVersionOpt),
    "kata_version": (Optional[str], KataVersionOpt),
    "cgroup_driver": (Optional[str], CgroupDriverOpt),
    "mirror": (Optional[List[str]], MirrorOpt),
    "checksum": (Optional[List[str]], ChecksumOpt),
    "allow_unverified": (Optional[List[str]], AllowUnverifiedOpt),
    "ignore_preflight_errors": (Optional[List[str]], IgnorePreflightOpt),
    "allow_eol": (Optional[bool], AllowEolOpt),
    "disable_swap": (Optional[bool], DisableSwapOpt),
    "node_ip": (Optional[str], NodeIpOpt),
    "bundle": (Optional[Path], BundleOpt),
    "dry_run": (bool, DryRunOpt),
    "yes": (bool, YesOpt),
    "as_json": (bool, JsonOpt),
    "verbose": (int, VerboseOpt),
}
# option name -> setting name, where they differ
_SETTING_OF = {"key_fingerprint": "key_fingerprints", "mirror": "mirrors", "checksum": "checksums"}
_NOT_SETTINGS = ("config", "bundle", "dry_run", "yes", "as_json", "verbose")


@dataclasses.dataclass(frozen=True)
class NodeRun:
    """What a node command was given: its settings (as flags) and how to run."""

    config: Optional[Path]
    flags: Dict[str, Any]
    bundle: Optional[Path]
    dry_run: bool
    yes: bool
    as_json: bool
    verbose: int


def node_command(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the NODE_OPTIONS; it receives them as `run: NodeRun`."""
    own = [p for name, p in inspect.signature(func).parameters.items() if name != "run"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in NODE_OPTIONS.items()
    ]

    @functools.wraps(func)
    def command(**values: Any) -> None:
        given = {name: values.pop(name) for name in NODE_OPTIONS}
        flags = _flags(
            **{
                _SETTING_OF.get(name, name): value
                for name, value in given.items()
                if name not in _NOT_SETTINGS
            }
        )
        run = NodeRun(
            config=given["config"], flags=flags, bundle=given["bundle"],
            dry_run=given["dry_run"], yes=given["yes"], as_json=given["as_json"],
            verbose=given["verbose"],
        )  # fmt: skip
        func(run=run, **values)

    hints = typing.get_type_hints(func)
    command.__annotations__ = {
        **{p.name: hints.get(p.name, p.annotation) for p in own},
        **{name: kind for name, (kind, _) in NODE_OPTIONS.items()},
    }
    command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    return command


def _run(
    plan: Any,
    settings: Any,
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    verbose: int,
    command: str,
    bundle: Optional[Path] = None,
    question: str = "Apply these changes?",
    trace_only_changes: bool = False,
    quiet: bool = False,
    json_extra: Optional[Callable[[], Dict[str, Any]]] = None,
) -> Any:
    """Render a session's run: progress while it runs, then the recap or JSON.

    command: the command's name (allinone), for the message asking for root.
    quiet: print nothing when nothing changed (errors still go to stderr)."""
    from frakti_install import console, session

    console.configure_logging(verbose, quiet=as_json)
    display = None if as_json or quiet else console.StepProgress(dry_run)

    def ask(checked: Any) -> bool:
        console.show_plan(checked)
        return console.confirm(question)

    report = session.run(
        plan, settings, dry_run=dry_run, confirm=None if yes else ask, bundle=bundle,
        downloader_factory=console.downloader_factory(settings, display), display=display,
        trace_only_changes=trace_only_changes, command=f"frakti-install {command}",
    )  # fmt: skip
    if as_json:
        extra = json_extra() if json_extra else {}
        typer.echo(json.dumps({**report.as_dict(), **extra}, indent=2))
    elif report.changed or not quiet:
        console.recap(report, settings.log_file, changes_shown=display is not None)
    session.raise_for(report)
    return report


# --- commands ----------------------------------------------------------------
@app.command()
@node_command
def allinone(advertise_address: Optional[str] = AdvertiseOpt, *, run: NodeRun) -> None:
    """Turn this host into a one-node Kubernetes cluster running pods in VMs with frakti."""

    def _allinone() -> None:
        from frakti_install import console, plans, session

        settings = session.load_settings(
            run.config, {**run.flags, "advertise_address": advertise_address}
        )
        report = _run(
            lambda ctx: plans.allinone(ctx.runtime), settings, dry_run=run.dry_run,
            yes=run.yes, as_json=run.as_json, verbose=run.verbose, bundle=run.bundle,
            command="allinone",
        )  # fmt: skip
        if not (run.dry_run or run.as_json):
            console.next_steps(session.join_line_after_init(report, settings))

    _guard(_allinone, as_json=run.as_json)


@app.command()
@node_command
def node(
    join: str = typer.Option(..., "--join", help="The master's API endpoint, HOST:6443."),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        envvar="FRAKTI_INSTALL_JOIN_TOKEN",
        help="Bootstrap token (a secret). Other users can see a --token value while this "
        "runs: prefer FRAKTI_INSTALL_JOIN_TOKEN or --token-file.",
        show_envvar=True,
    ),
    token_file: Optional[Path] = typer.Option(
        None,
        "--token-file",
        help="A file (mode 0600) holding the bootstrap token.",
        dir_okay=False,
    ),
    ca_hash: str = typer.Option(
        ..., "--discovery-token-ca-cert-hash", help="sha256:<hash> of the cluster CA."
    ),
    *,
    run: NodeRun,
) -> None:
    """Join this host to a cluster as a worker (the line join-command prints)."""

    def _node() -> None:
        from frakti_install import plans, session

        joining = {
            "join_endpoint": join,
            "join_token": _join_token(token, token_file),
            "join_ca_hash": ca_hash,
        }
        settings = session.load_settings(run.config, {**run.flags, **joining})
        session.check_join(settings)  # a malformed join stops here, before any change
        _run(
            lambda ctx: plans.node(ctx.runtime), settings, dry_run=run.dry_run, yes=run.yes,
            command="node", as_json=run.as_json, verbose=run.verbose, bundle=run.bundle,
        )  # fmt: skip

    _guard(_node, as_json=run.as_json)


def _join_token(token: Optional[str], token_file: Optional[Path]) -> str:
    """The token from --token / FRAKTI_INSTALL_JOIN_TOKEN or --token-file (one of them)."""
    from frakti_install import joining
    from frakti_install.errors import ConfigError

    # the commands this run starts need not see it in their environment
    os.environ.pop(joining.TOKEN_ENV, None)
    if token and token_file:
        raise ConfigError(
            "two join tokens given (--token or FRAKTI_INSTALL_JOIN_TOKEN, and --token-file)",
            hint="Give one of them.",
        )
    if token_file is not None:
        return joining.read_token_file(token_file)
    if not token:
        raise ConfigError(
            "no join token given",
            hint="Run the line 'frakti-install join-command' prints on the master, or give "
            "--token-file PATH (mode 0600) or FRAKTI_INSTALL_JOIN_TOKEN.",
        )
    return token


@app.command("join-command")
def join_command(
    config: Optional[Path] = InstalledConfigOpt,
    ttl: str = typer.Option("24h", "--ttl", help="How long the bootstrap token is valid."),
) -> None:
    """Print the line that joins a worker to this master (it holds a fresh token)."""

    def _join() -> None:
        from frakti_install import joining, session

        ctx = session.new_context(session.installed_settings(config))
        session.require_master(ctx)  # a bare host or a worker is told so at once
        typer.echo(joining.create_join_line(ctx, ttl).command())

    _guard(_join)


@app.command()
def routes(
    config: Optional[Path] = InstalledConfigOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print nothing when nothing changes (for timers)."
    ),
    verbose: int = VerboseOpt,
) -> None:
    """Bring the routes to the other nodes' pod subnets (and the CNI config) in sync."""

    def _routes() -> None:
        from frakti_install import plans, session
        from frakti_install.constants import ADMIN_CONF, KUBELET_CONF

        settings = session.installed_settings(config)
        probe = session.new_context(settings)
        if not dry_run:
            session.require_root(probe, "frakti-install routes")
        # without a kubeconfig there is no cluster to ask: say so, not wait for a subnet
        session.require_install(probe, needs=(KUBELET_CONF, ADMIN_CONF))
        _run(
            lambda ctx: plans.routes(ctx.runtime), settings, command="routes",
            dry_run=dry_run, yes=True,
            as_json=as_json, verbose=verbose, trace_only_changes=True, quiet=quiet,
        )  # fmt: skip

    _guard(_routes, as_json=as_json)


@app.command()
def status(config: Optional[Path] = InstalledConfigOpt, as_json: bool = JsonOpt) -> None:
    """Check every step without changing anything; exit 11 when something drifted."""

    def _status() -> None:
        from frakti_install import session
        from frakti_install.errors import Drift
        from frakti_install.verify import isolation_status

        settings = session.installed_settings(config)
        session.require_install(session.new_context(settings))  # bare or unfinished: at once
        report = _run(
            session.installed_plan, settings, command="status", dry_run=True, yes=True,
            as_json=as_json, verbose=0,
            json_extra=lambda: {"isolation": isolation_status(session.new_context(settings))},
        )  # fmt: skip
        if report.drifted:
            raise Drift(
                "drift in: " + ", ".join(report.drifted),
                hint="Run the install again to put it right ('--dry-run' shows how).",
            )

    _guard(_status, as_json=as_json)


@app.command()
def verify(
    config: Optional[Path] = InstalledConfigOpt,
    as_json: bool = JsonOpt,
    node: Optional[List[str]] = typer.Option(
        None, "--node", help="Verify only this node (repeatable; default: every node)."
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave the verify pods for inspection."),
    verbose: int = VerboseOpt,
) -> None:
    """Show that pods run in VMs on every node: isolation facts and a pod per node."""

    def _verify() -> None:
        from frakti_install import console, session
        from frakti_install import verify as verifying

        console.configure_logging(verbose, quiet=as_json)
        settings = session.installed_settings(config)
        with session.logging_to_file(Path(settings.log_file)):  # it creates and deletes pods
            report = verifying.verify(session.new_context(settings), node or (), keep=keep)
        if as_json:
            typer.echo(json.dumps(report.as_dict(), indent=2))
        else:
            console.show_verify(report.as_dict())
        verifying.raise_for(report)

    _guard(_verify, as_json=as_json)


@app.command()
def reset(
    config: Optional[Path] = InstalledConfigOpt,
    purge: bool = typer.Option(False, "--purge", help="Also remove the packages it installed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Undo what frakti-install did: cluster, services, files (originals restored), rules."""

    def _reset() -> None:
        from frakti_install import plans, session

        _run(
            lambda ctx: plans.reset(ctx.runtime, purge), session.installed_settings(config),
            command="reset",
            dry_run=dry_run, yes=yes,
            as_json=as_json, verbose=verbose,
            question="Tear down the cluster and undo these changes?",
        )  # fmt: skip

    _guard(_reset, as_json=as_json)


@app.command()
def upgrade(
    config: Optional[Path] = InstalledConfigOpt,
    kubernetes_version: Optional[str] = typer.Option(
        None,
        "--kubernetes-version",
        help="vX.Y (its latest patch) or vX.Y.Z; default: the latest patch of the running "
        "minor (master) or the control plane's release (worker).",
    ),
    kata_version: Optional[str] = KataVersionOpt,
    checksum: Optional[List[str]] = ChecksumOpt,
    allow_eol: Optional[bool] = AllowEolOpt,
    kubeconfig: Optional[str] = typer.Option(
        None,
        "--kubeconfig",
        help="On a worker: an admin kubeconfig (a copy of the master's admin.conf) to drain "
        "and uncordon this node with; its kubelet's credentials cannot evict pods.",
    ),
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Move this node to a newer Kubernetes (and Kata), the way kubeadm's upgrade guide says."""

    def _upgrade() -> None:
        from frakti_install import config as settings_module
        from frakti_install import console, plans, session
        from frakti_install import upgrade as upgrading

        sums = settings_module.parse_pairs(checksum, "checksum") if checksum else {}
        recorded = session.installed_settings(config)
        if allow_eol:
            recorded = dataclasses.replace(recorded, allow_eol=True)
        if kubeconfig:
            recorded = dataclasses.replace(recorded, drain_kubeconfig=kubeconfig)
        probe = session.new_context(recorded)
        if not dry_run:
            session.require_root(probe, "frakti-install upgrade")
        session.require_install(probe)  # nothing installed, or an unfinished install: at once
        settings, nothing = upgrading.target_settings(
            recorded, probe, kubernetes_version, kata_version, sums
        )
        if nothing is not None:
            if as_json:
                typer.echo(json.dumps({"ok": True, "changed": False, "nothing_newer": nothing}))
            else:
                console.out.print(nothing, markup=False, highlight=False)
            return
        _run(
            lambda ctx: plans.upgrade(ctx.runtime), settings, command="upgrade",
            dry_run=dry_run, yes=yes, as_json=as_json, verbose=verbose,
            question="Upgrade this node?",
        )  # fmt: skip

    _guard(_upgrade, as_json=as_json)


@app.command()
def info(config: Optional[Path] = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """What frakti-install sees on this host (read-only; works on any Linux)."""

    def _info() -> None:
        from frakti_install import console, inspect, session

        data = inspect.host_info(session.new_context(session.load_settings(config, {})))
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            console.show_info(data)

    _guard(_info, as_json=as_json)


@app.command()
def cluster(
    action: str = typer.Argument(
        "install",
        help="install (the default), or upgrade: the master, then each worker in turn.",
    ),
    file: Path = typer.Option(
        ..., "--file", "-f", dir_okay=False, help="Cluster inventory (kind: Cluster)."
    ),
    kubernetes_version: Optional[str] = typer.Option(
        None,
        "--kubernetes-version",
        help="upgrade: the master's target, vX.Y or vX.Y.Z (the workers follow it).",
    ),
    kata_version: Optional[str] = typer.Option(
        None,
        "--kata-version",
        help="upgrade: the Kata Containers release for every node (kata profile).",
    ),
    checksum: Optional[List[str]] = typer.Option(
        None,
        "--checksum",
        help="upgrade: NAME=SHA256 for every node, e.g. kata=SHA256 for a --kata-version "
        "whose sum is not pinned.",
    ),
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
) -> None:
    """Install or upgrade a whole cluster from one inventory over SSH (Ansible: the cluster
    extra)."""

    def _cluster() -> int:
        from frakti_install import cluster as clusters
        from frakti_install import console
        from frakti_install.errors import ConfigError

        if action not in clusters.PLAYBOOKS:
            raise ConfigError(f"unknown cluster action {action!r}",
                              hint="Use install or upgrade.")  # fmt: skip
        from frakti_install import config as settings_module

        if action == "install" and (kubernetes_version or kata_version or checksum):
            raise ConfigError(
                "--kubernetes-version, --kata-version and --checksum are upgrade's options",
                hint="For an install set them in the inventory's config.",
            )
        sums = settings_module.parse_pairs(checksum, "checksum") if checksum else {}
        if sums:  # each host would refuse them only after Ansible had changed it
            defaults = settings_module.Settings()
            settings_module.validate(dataclasses.replace(defaults, checksums=sums))
        master_args, node_args = clusters.upgrade_arguments(kubernetes_version, kata_version, sums)

        def ask(text: str) -> bool:
            console.out.print(text, markup=False, highlight=False)
            return console.confirm(f"{action.capitalize()} the cluster on these hosts?")

        inventory = clusters.load_inventory(file)
        return clusters.run_cluster(inventory, dry_run=dry_run, yes=yes, confirm=ask,
                                    action=action, upgrade_args=master_args,
                                    worker_upgrade_args=node_args)  # fmt: skip

    code = _guard(_cluster)
    if code:
        raise typer.Exit(code)


@bundle_app.command("create")
def bundle_create(
    family: str = typer.Option(..., "--family", help="deb or rpm: the hosts' package family."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The tarball to write."),
    arch: str = typer.Option("amd64", "--arch", help="The hosts' architecture."),
    wheels: Optional[Path] = typer.Option(
        None, "--wheels", help="A directory of wheels (this tool and its dependencies) to include."
    ),
    config: Optional[Path] = ConfigOpt,
    version_set: Optional[str] = VersionSetOpt,
    frakti_version: Optional[str] = FraktiVersionOpt,
    kubernetes_version: Optional[str] = KubeVersionOpt,
    hyperd_version: Optional[str] = HyperdVersionOpt,
    mirror: Optional[List[str]] = MirrorOpt,
    checksum: Optional[List[str]] = ChecksumOpt,
    runtime: Optional[str] = RuntimeOpt,
    kata_version: Optional[str] = KataVersionOpt,
    allow_eol: Optional[bool] = AllowEolOpt,
) -> None:
    """Download and verify every artifact into one tarball, on a connected machine."""
    flags = _flags(
        version_set=version_set, frakti_version=frakti_version,
        kubernetes_version=kubernetes_version, hyperd_version=hyperd_version,
        mirrors=mirror, checksums=checksum, runtime=runtime, kata_version=kata_version,
        allow_eol=allow_eol,
    )  # fmt: skip

    def _create() -> None:
        from frakti_install import bundle, console, session
        package_format = bundle.package_format(family)  # deb | rpm (debian | rhel too)
        settings = session.load_settings(config, flags)
        runtime = session.bundled_runtime(settings)
        name = f"frakti-bundle-{runtime.name}-{package_format}-{arch}.tar.gz"
        target = output or Path(name)
        display = console.StepProgress(dry_run=False)
        with display:
            artifacts = runtime.artifacts(
                arch, package_format, console.downloader_factory(settings, display)
            )
            written = bundle.create_bundle(
                target, artifacts, family=package_format, arch=arch, versions=runtime.versions,
                os_packages=runtime.bundle_os_packages(bundle.FAMILIES[package_format])
                or bundle.os_packages_for(package_format),
                runtime=runtime,
                wheels=sorted(wheels.glob("*.whl")) if wheels else (),
            )  # fmt: skip
        from frakti_install.fsio import sha256_of

        # its sums guard against damage, not against a carrier that changes it
        # (the manifest is not signed): the user compares this out of band
        typer.echo(f"wrote {written}")
        typer.echo(
            f"sha256 {sha256_of(written)}: check it on the target (sha256sum {written.name}) "
            "before installing from it"
        )

    _guard(_create)


def main() -> None:
    app(prog_name="frakti-install")


if __name__ == "__main__":  # pragma: no cover
    main()
