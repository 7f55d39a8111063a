"""The changes any step can ask for. Each says what it will do (for the plan
and the journal) and does it through the host. A change only one step makes
(kubeadm init, the kata release unpacked, ...) is defined beside that step."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

from frakti_install import tarsafe
from frakti_install.constants import ADMIN_CONF
from frakti_install.engine import Action
from frakti_install.errors import FraktiInstallError
from frakti_install.fsio import sha256_of

if TYPE_CHECKING:
    from frakti_install.context import Context


@dataclass(frozen=True)
class Run(Action):
    argv: Tuple[str, ...]
    why: str = ""
    timeout: Optional[float] = None
    env: Optional[Dict[str, str]] = None

    def describe(self) -> str:
        command = " ".join(self.argv)
        return f"{self.why}: {command}" if self.why else command

    def apply(self, ctx: Context) -> None:
        ctx.host.run(self.argv, env=self.env, timeout=self.timeout)


def run(
    *argv: str, why: str = "", timeout: Optional[float] = None, env: Optional[Dict[str, str]] = None
) -> Run:
    return Run(tuple(argv), why, timeout, env)


@dataclass(frozen=True)
class Systemctl(Action):
    """systemctl VERB UNIT; enabling is journaled so reset knows what to disable."""

    verb: str
    unit: str
    why: str

    def describe(self) -> str:
        return f"{self.why}: systemctl {self.verb} {self.unit}"

    def apply(self, ctx: Context) -> None:
        ctx.host.run(["systemctl", self.verb, self.unit], timeout=300)
        if self.verb == "enable":
            ctx.host.note(event="service", unit=self.unit)
        if self.verb == "restart":
            ctx.host.unlink_marker(restart_marker(ctx, self.unit))


def restart_marker(ctx: Context, unit: str) -> str:
    """Exists while a unit's inputs changed and it has not restarted since."""
    return f"{ctx.settings.state_dir}/pending-restart/{unit}"


@dataclass(frozen=True)
class MarkRestartPending(Action):
    """Noted before a unit's inputs change, so a run killed before the restart
    still restarts it next time (the inputs will then look current)."""

    unit: str

    def describe(self) -> str:
        return f"note that {self.unit} must restart"

    def apply(self, ctx: Context) -> None:
        ctx.host.touch(restart_marker(ctx, self.unit))


@dataclass(frozen=True)
class WriteFile(Action):
    path: str
    content: str = field(repr=False)
    mode: int = 0o644
    reason: str = "create"  # create | update | chmod

    def describe(self) -> str:
        return f"{self.reason} {self.path}" + (
            f" (mode {self.mode:o})" if self.reason == "chmod" else ""
        )

    def apply(self, ctx: Context) -> None:
        ctx.host.write_file(self.path, self.content.encode(), self.mode)


@dataclass(frozen=True)
class RemoveFile(Action):
    path: str

    def describe(self) -> str:
        return f"remove {self.path}"

    def apply(self, ctx: Context) -> None:
        ctx.host.remove(self.path)


def prepare_package_index(ctx: Context, names: Sequence[str], always_refresh: bool = False) -> None:
    """Finish an install a killed run interrupted, and refresh the package index
    when it offers none of `names` yet (or always: a repository was just changed)."""
    pm = ctx.packages
    repair = pm.repair_argv(ctx.host)
    if repair:
        ctx.host.run(repair, env=pm.env)
    refresh = pm.refresh_argv()
    if refresh and (always_refresh or pm.missing_candidates(ctx.host, names)):
        ctx.host.run(refresh, env=pm.env, timeout=900)


@dataclass(frozen=True)
class InstallPackages(Action):
    names: Tuple[str, ...]

    def describe(self) -> str:
        return "install packages " + " ".join(self.names)

    def apply(self, ctx: Context) -> None:
        pm = ctx.packages
        prepare_package_index(ctx, self.names)
        missing = pm.missing_candidates(ctx.host, self.names)
        if missing:
            raise FraktiInstallError(
                f"the package repositories offer no {', '.join(missing)}",
                hint="Check that this host can reach its OS package repositories "
                "(or their local mirror).",
            )
        ctx.host.run(pm.install_argv(self.names), env=pm.env, timeout=1800)
        ctx.host.note(event="packages", installed=list(self.names))


@dataclass(frozen=True)
class InstallPackageFiles(Action):
    """OS packages that are artifacts (hyperd's .deb/.rpm): download, verify, install."""

    artifacts: Tuple[str, ...]
    verified_with: str = ""  # Artifact.verified_with() of each: which hash, from where

    def describe(self) -> str:
        plural = "s" if len(self.artifacts) > 1 else ""
        how = f" (verified: {self.verified_with})" if self.verified_with else ""
        return (
            f"download, verify and install the {' and '.join(self.artifacts)} package{plural}{how}"
        )

    def apply(self, ctx: Context) -> None:
        paths = []
        for name in self.artifacts:
            local = ctx.artifacts.fetch(name)
            # The package manager wants the right suffix; link into a temp dir.
            paths.append((local, ctx.artifacts.get(name).filename))
        with tempfile.TemporaryDirectory(prefix="frakti-install-pkgs-") as tmp:
            files = []
            for local, filename in paths:
                target = os.path.join(tmp, filename)
                os.symlink(local, target)
                files.append(target)
            pm = ctx.packages
            ctx.host.run(pm.install_files_argv(files), env=pm.env, timeout=900)
        names = [ctx.profile.hyper_packages.get(name, name) for name in self.artifacts]
        ctx.host.note(event="packages", installed=names)


@dataclass(frozen=True)
class InstallArtifact(Action):
    """A verified download put in place as one file (kubelet, frakti, ...)."""

    artifact: str
    path: str
    mode: int = 0o755
    verified_with: str = ""  # Artifact.verified_with(): which hash, from where

    def describe(self) -> str:
        how = f" (verified: {self.verified_with})" if self.verified_with else ""
        return f"download, verify and install {self.artifact} to {self.path}{how}"

    def apply(self, ctx: Context) -> None:
        local = ctx.artifacts.fetch(self.artifact)
        ctx.host.install_file(local, self.path, self.mode)
        ctx.installed.remember(self.path, ctx.artifacts.get(self.artifact), sha256_of(local))


@dataclass(frozen=True)
class ExtractArtifact(Action):
    """Files out of a verified tarball (crictl, CNI plugins), each installed atomically."""

    artifact: str
    directory: str
    members: Tuple[str, ...] = ()  # empty: every regular file at the top level
    verified_with: str = ""  # Artifact.verified_with(): which hash, from where

    def describe(self) -> str:
        what = ", ".join(self.members) if self.members else "all files"
        how = f" (verified: {self.verified_with})" if self.verified_with else ""
        return f"download, verify and unpack {self.artifact} ({what}) into {self.directory}{how}"

    def apply(self, ctx: Context) -> None:
        local = ctx.artifacts.fetch(self.artifact)
        artifact = ctx.artifacts.get(self.artifact)
        archive_sha256 = sha256_of(local)  # what the record compares with a given sum
        # regular files only, by base name: no paths, links or devices from the archive
        for member, data in tarsafe.safe_members(local, names=self.members).read():
            target = f"{self.directory.rstrip('/')}/{member.target}"
            ctx.host.write_stream(data, target, 0o755)
            ctx.installed.remember(target, artifact, archive_sha256)


@dataclass(frozen=True)
class EditFile(Action):
    """A targeted edit of a file that is not ours (the host keeps a backup)."""

    path: str
    content: str = field(repr=False)
    what: str = ""

    def describe(self) -> str:
        return f"edit {self.path}: {self.what} (the rest kept as is, a backup kept)"

    def apply(self, ctx: Context) -> None:
        st = ctx.host.stat(self.path)
        mode = (st.st_mode & 0o7777) if st is not None else 0o644
        ctx.host.write_file(self.path, self.content.encode(), mode)


@dataclass(frozen=True)
class Symlink(Action):
    path: str
    target: str

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"

    def apply(self, ctx: Context) -> None:
        ctx.host.symlink(self.path, self.target)


@dataclass(frozen=True)
class KubectlApply(Action):
    manifest: str = field(repr=False)
    why: str = ""

    def describe(self) -> str:
        return f"{self.why}: kubectl apply -f -"

    def apply(self, ctx: Context) -> None:
        argv = ["kubectl", "--kubeconfig", ADMIN_CONF, "apply", "-f", "-"]
        ctx.host.run(argv, input=self.manifest, timeout=120)


@dataclass(frozen=True)
class RestoreFile(Action):
    path: str
    backup: str

    def describe(self) -> str:
        return f"restore {self.path} from {self.backup}"

    def apply(self, ctx: Context) -> None:
        content = ctx.host.read_bytes(self.backup)
        st = ctx.host.stat(self.backup)
        assert content is not None and st is not None, self.backup
        ctx.host.write_file(self.path, content, st.st_mode & 0o7777)


@dataclass(frozen=True)
class RemoveTree(Action):
    path: str

    def describe(self) -> str:
        return f"delete {self.path} (runtime data)"

    def apply(self, ctx: Context) -> None:
        ctx.host.remove_tree(self.path)
