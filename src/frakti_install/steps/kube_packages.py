"""Kubernetes from its signed per-minor package repository (pkgs.k8s.io):
the repository with its keyring (never apt-key), then kubelet, kubeadm and
kubectl pinned and held. The values per OS family are the runtime profile's
data (families.<family>: repo, package_spec, hold, ...)."""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence, Tuple

from frakti_install import probes
from frakti_install.actions import prepare_package_index, run
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ExitCode, FraktiInstallError
from frakti_install.fsio import sha256_of
from frakti_install.host import Host
from frakti_install.steps.common import package_actions, template_actions

if TYPE_CHECKING:
    from frakti_install.context import Context


class KeyMismatch(FraktiInstallError):
    """A downloaded signing key is not the one pinned in kata.yaml (nothing installed)."""

    exit_code = ExitCode.CHECKSUM


def now() -> datetime.datetime:
    """When a signing key must be valid: now (tests pass their own moment)."""
    return datetime.datetime.now(tz=datetime.timezone.utc)


def check_signing_key(
    host: Host, local: Path, fingerprints: Sequence[str], url: str, artifact: str, home: str
) -> None:
    """KeyMismatch unless the key file holds only keys of these fingerprints,
    none expired or revoked now (gpg --show-keys in the scratch home `home`)."""
    wanted = set(fingerprints)
    shown = host.run(
        ["gpg", "--batch", "--homedir", home, "--show-keys", "--with-colons", str(local)]
    )
    keys = probes.signing_keys(shown.stdout)
    found = [key.fingerprint for key in keys]
    if not found or not set(found) <= wanted:
        raise KeyMismatch(
            f"{url} holds key(s) {', '.join(found) or 'none'}, not {', '.join(sorted(wanted))}",
            hint="The key was not installed. Check --mirror kubernetes-pkgs; a mirror "
            "that signs with its own key needs --key-fingerprint "
            f"{artifact}=<its fingerprint> (key_fingerprints: in the config).",
        )
    problems = [p for p in (key.problem_at(now()) for key in keys) if p]
    if problems:
        raise KeyMismatch(
            f"{url}: {'; '.join(problems)}; apt would refuse the repository it signs",
            hint="The key was not installed. Pick a supported Kubernetes minor (their "
            "keys are renewed), or point --mirror kubernetes-pkgs at a mirror whose "
            "Release.key is current.",
        )


@dataclass(frozen=True)
class InstallKeyring(Action):
    """Release.key (through the artifact layer), checked by fingerprint, dearmored."""

    artifact: str
    path: str

    def describe(self) -> str:
        return (
            f"download {self.artifact}, check its fingerprint and expiry and dearmor it into "
            f"{self.path} (gpg --dearmor)"
        )

    def apply(self, ctx: Context) -> None:
        artifacts = ctx.artifacts
        local = artifacts.fetch(self.artifact)
        with tempfile.TemporaryDirectory(prefix="frakti-install-gpg-") as home:
            check_signing_key(
                ctx.host, local, artifacts.fingerprints(self.artifact),
                artifacts.get(self.artifact).url, self.artifact, home,
            )  # fmt: skip
            keyring = Path(home) / "keyring.gpg"
            ctx.host.run(
                ["gpg", "--batch", "--homedir", home, "--dearmor", "--output", str(keyring),
                 str(local)]
            )  # fmt: skip
            ctx.host.install_file(keyring, self.path, 0o644)
        ctx.installed.remember(self.path, artifacts.get(self.artifact), sha256_of(local))


def package_version(ctx: Context) -> str:
    """The packages' upstream version: 1.31.13."""
    return ctx.runtime.kubernetes_version.lstrip("v")


def repo_url(ctx: Context) -> str:
    template = str(ctx.runtime.family(ctx.profile)["repo"]["url"])
    return template.format(base=ctx.artifacts.base_url("kubernetes-pkgs"), **ctx.runtime.versions)


class KubernetesRepo(Step):
    name = "kubernetes-repo"
    title = "The signed Kubernetes package repository (pkgs.k8s.io)"

    def check(self, ctx: Context) -> Check:
        family = ctx.runtime.family(ctx.profile)
        repo = family["repo"]
        actions: List[Action] = package_actions(ctx, family["repo_packages"])
        if repo["keyring"]:
            artifact = ctx.artifacts.get(repo["key_artifact"])
            if not ctx.installed.matches(repo["keyring"], artifact):
                actions.append(InstallKeyring(repo["key_artifact"], repo["keyring"]))
        if ctx.package_files:  # an offline bundle's packages: no repository to reach
            if not actions:
                return Check.ok("no repository: the packages come from the offline bundle")
            return Check(actions)
        url = repo_url(ctx)
        actions += template_actions(
            ctx,
            repo["path"],
            repo["template"],
            url=url,
            keyring=repo["keyring"],
            minor=ctx.runtime.version("kubernetes_minor"),
        )
        if not actions:
            signed = f"signed-by {repo['keyring']}" if repo["keyring"] else "gpgcheck=1"
            return Check.ok(f"{url} in {repo['path']} ({signed})")
        return Check(actions)


@dataclass(frozen=True)
class InstallKubePackages(Action):
    """Pinned packages from the Kubernetes repo; the index is refreshed first
    (the repository may be new)."""

    specs: Tuple[str, ...]
    names: Tuple[str, ...]
    options: Tuple[str, ...]

    def describe(self) -> str:
        return "install " + " ".join(self.specs) + " from the Kubernetes repository"

    def apply(self, ctx: Context) -> None:
        pm = ctx.packages
        prepare_package_index(ctx, self.names, always_refresh=True)
        ctx.host.run(pm.install_argv([*self.options, *self.specs]), env=pm.env, timeout=1800)
        ctx.host.note(event="packages", installed=list(self.names))


@dataclass(frozen=True)
class InstallKubePackageFiles(Action):
    """The same packages from an offline bundle's files (verified before the
    run began): a local install, nothing from the network."""

    files: Tuple[str, ...]
    names: Tuple[str, ...]
    options: Tuple[str, ...]

    def describe(self) -> str:
        shown = " ".join(Path(f).name for f in self.files)
        return f"install {shown} from the offline bundle"

    def apply(self, ctx: Context) -> None:
        pm = ctx.packages
        prepare_package_index(ctx, ())
        argv = pm.install_files_argv(list(self.files))
        ctx.host.run([*argv[:2], *self.options, *argv[2:]], env=pm.env, timeout=1800)
        ctx.host.note(event="packages", installed=list(self.names))


class KubePackages(Step):
    name = "kubernetes"
    title = "kubelet, kubeadm and kubectl (pinned and held), CNI plugins"

    def check(self, ctx: Context) -> Check:
        family = ctx.runtime.family(ctx.profile)
        kubernetes = ctx.runtime.data["kubernetes"]
        pinned: List[str] = list(kubernetes["packages"])
        extra: List[str] = list(kubernetes["extra_packages"])
        version = package_version(ctx)
        actions: List[Action] = package_actions(ctx, ctx.profile.packages["kube_deps"])
        installed = ctx.facts.packages(ctx.profile.package_manager, tuple(pinned + extra))
        stale = [n for n in pinned if not (installed.get(n) or "").startswith(version + "-")]
        missing = [n for n in extra if installed.get(n) is None]
        if (stale or missing) and ctx.package_files:
            # what apt/dnf would pull from the repository (cri-tools for kubeadm < 1.32)
            deps = [n for n in ctx.package_files if n not in pinned + extra]
            present = ctx.facts.packages(ctx.profile.package_manager, tuple(deps))
            names = stale + missing + [n for n in deps if present.get(n) is None]
            actions.append(
                InstallKubePackageFiles(
                    files=tuple(str(ctx.package_files[name]) for name in names),
                    names=tuple(names),
                    options=tuple(family.get("files_install_options", ())),
                )
            )
        elif stale or missing:
            actions.append(
                InstallKubePackages(
                    specs=tuple(
                        str(family["package_spec"]).format(name=name, version=version)
                        for name in stale
                    )
                    + tuple(missing),
                    names=tuple(stale + missing),
                    options=tuple(family["install_options"]),
                )
            )
        if family["hold"] == "apt-mark":
            unheld = [n for n in pinned if n not in ctx.facts.apt_holds()]
            if unheld:
                actions.append(run("apt-mark", "hold", *unheld, why="hold them at this version"))
            held = "held with apt-mark"
        else:
            held = f"held by the exclude line of {family['repo']['path']}"
        if not actions:
            return Check.ok(f"{', '.join(pinned)} {version} installed and {held}")
        return Check(actions)
