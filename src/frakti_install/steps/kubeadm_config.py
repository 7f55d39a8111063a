"""The config file kubeadm init and join read. The bootstrap token goes in it,
never on kubeadm's command line: /proc/PID/cmdline is readable by every local
user while kubeadm runs. The file is written 0600, outside backups and the
journal, and removed when kubeadm returns (docs/upstream-facts.md: schemas)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

from frakti_install.engine import Action
from frakti_install.errors import ConfigError

if TYPE_CHECKING:
    from frakti_install.context import Context

# (first minor, first minor without it, apiVersion): the schema each release reads.
# v1alpha3 is 1.12's only current one (1.13 deprecated it); v1beta3 came in 1.22;
# v1beta4 is read from 1.31 (v1beta3 deprecated there, removed in 1.36).
API_VERSIONS: Tuple[Tuple[Tuple[int, int], Optional[Tuple[int, int]], str], ...] = (
    ((1, 12), (1, 13), "kubeadm.k8s.io/v1alpha3"),
    ((1, 22), (1, 31), "kubeadm.k8s.io/v1beta3"),
    ((1, 31), None, "kubeadm.k8s.io/v1beta4"),
)
OLD_SCHEMA = "kubeadm.k8s.io/v1alpha3"  # flat JoinConfiguration, InitConfiguration.apiEndpoint


def api_version(kubernetes: str) -> str:
    """The kubeadm config apiVersion that kubeadm of this release reads."""
    match = re.match(r"^v?(\d+)\.(\d+)", kubernetes)
    minor = (int(match.group(1)), int(match.group(2))) if match else None
    for first, below, version in API_VERSIONS:
        if minor is not None and minor >= first and (below is None or minor < below):
            return version
    raise ConfigError(
        f"frakti-install does not know which kubeadm config schema Kubernetes {kubernetes} reads",
        hint="Use a Kubernetes release of 1.12, or 1.22 and newer.",
    )


def config_path(ctx: Context, command: str) -> str:
    """Where the config of `kubeadm <command>` is put while kubeadm runs."""
    return f"{ctx.settings.state_dir}/kubeadm-{command}.yaml"


def run_with_config(
    ctx: Context, argv: Sequence[str], path: str, content: str, timeout: float
) -> None:
    """kubeadm ARGV --config=PATH with content (it holds the token) in PATH,
    gone again when kubeadm returns, whatever it returned."""
    ctx.host.write_secret(path, content.encode())
    try:
        ctx.host.run([*argv, f"--config={path}"], timeout=timeout)
    finally:
        ctx.host.remove_secret(path)


@dataclass(frozen=True)
class RemoveLeftoverConfig(Action):
    """A run killed while kubeadm ran left its config (with a token) behind."""

    path: str

    def describe(self) -> str:
        return f"remove {self.path} (a killed run's kubeadm config; it holds a token)"

    def apply(self, ctx: Context) -> None:
        ctx.host.remove_secret(self.path)
