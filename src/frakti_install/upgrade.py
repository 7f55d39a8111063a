"""`upgrade`: which release a node moves to, and the plan that moves it.

The target, from the settings the install recorded and what runs now:
- `--kubernetes-version vX.Y[.Z]`: that release (a minor: its latest patch in
  the profile's table; end of life refused unless allow_eol);
- else, on the master, the latest patch of the minor it runs (the version skew
  policy's advice before a minor upgrade; a minor upgrade is asked for by name,
  so a second `upgrade` changes nothing);
- else, on a worker, the control plane's release (a worker follows its master).
The version skew policy itself is the plan's first step (steps/upgrade.py),
so a dry run, a refusal and a resumed run all judge it the same way."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

from frakti_install import config, runtimes, versions
from frakti_install.config import Settings
from frakti_install.context import Context
from frakti_install.errors import ConfigError, NotInstalled
from frakti_install.kubesource import PackageRepository
from frakti_install.steps.cluster import kubeconfig
from frakti_install.steps.containerd import too_old_containerd, too_old_containerd_fix
from frakti_install.steps.upgrade import is_master


def installed_kubeadm(ctx: Context) -> str:
    """The kubeadm package's release on this host (v1.35.9)."""
    found = ctx.facts.packages(ctx.profile.package_manager, ("kubeadm",)).get("kubeadm")
    if not found:
        raise NotInstalled(
            "no kubeadm package here: this node was not installed by frakti-install's "
            f"{ctx.runtime.name} profile",
            hint="Install first: 'frakti-install allinone --runtime kata' (or 'node').",
        )
    return "v" + found.split("-")[0]


def default_target(ctx: Context) -> str:
    """The release an upgrade without --kubernetes-version moves to."""
    if not is_master(ctx):
        server = ctx.facts.server_version(kubeconfig(ctx))
        if server is None:
            raise NotInstalled(
                "the API server does not answer: a worker follows the control plane's release",
                hint="Give --kubernetes-version, or check the master.",
            )
        return "v" + ".".join(str(part) for part in versions.parse(server)[:3])
    current = installed_kubeadm(ctx)
    releases = versions.kubernetes_releases(ctx.runtime.data["kubernetes"])
    minor = current.rsplit(".", 1)[0]
    row = next((r for r in releases if r.minor == minor), None)
    if row is None or versions.parse(row.latest) <= versions.parse(current):
        return current
    return row.latest


def target_settings(
    recorded: Settings,
    ctx: Context,
    kubernetes_version: Optional[str],
    kata_version: Optional[str],
    checksums: Optional[Dict[str, str]] = None,
) -> Tuple[Settings, Optional[str]]:
    """The settings the upgrade installs (validated: ConfigError before any change),
    or (recorded, why) when the profile has nothing newer. A recorded kata checksum
    is the installed release's tarball's: another --kata-version drops it (the new
    release's is pinned or given in `checksums`)."""
    why = ctx.runtime.nothing_newer()
    if why is not None:
        if kubernetes_version or kata_version:
            raise ConfigError(
                f"the {ctx.runtime.name} profile cannot upgrade: {why}",
                hint="Leave --kubernetes-version out; for current Kubernetes install the kata "
                "profile (frakti-install reset, then allinone --runtime kata).",
            )
        return recorded, why
    if not isinstance(ctx.runtime.kubernetes, PackageRepository):
        raise ConfigError(
            f"the {ctx.runtime.name} profile's Kubernetes comes as release binaries: "
            "upgrading them is not built yet",
            hint="Reset and install the newer version set.",
        )
    wanted = kubernetes_version or default_target(ctx)
    installed_kata = ctx.runtime.version("kata")
    if kata_version and versions.parse(kata_version) < versions.parse(installed_kata):
        raise ConfigError(
            f"Kata Containers {kata_version} is older than the installed {installed_kata}: "
            "a downgrade",
            hint="Give a newer --kata-version, or leave it out to keep this one.",
        )
    sums = dict(recorded.checksums)
    if kata_version and kata_version != installed_kata:
        sums.pop("kata", None)
    sums.update(checksums or {})
    settings = config.validate(
        dataclasses.replace(
            recorded,
            kubernetes_version=wanted,
            kata_version=kata_version or recorded.kata_version,
            checksums=sums,
        )
    )
    # an unknown, unreleased or end-of-life release stops here; the patch is recorded
    patch = runtimes.runtime_for(settings).kubernetes_version
    upgraded = dataclasses.replace(settings, kubernetes_version=patch)
    # before the drain: a release that does not support this node's containerd
    too_old = too_old_containerd(Context(host=ctx.host, settings=upgraded))
    if too_old:
        raise ConfigError(too_old, hint=too_old_containerd_fix(ctx))
    return upgraded, None
