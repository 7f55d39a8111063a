"""The runtime profiles, one module each (runtimes/<name>.py with RUNTIME =
its class, plus its data file). A profile is found by its settings name;
nothing else lists them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Type

from frakti_install import config
from frakti_install.config import Settings
from frakti_install.errors import ConfigError
from frakti_install.runtimes.base import Runtime
from frakti_install.steps.preflight import Role

if TYPE_CHECKING:
    from frakti_install.facts import Facts


def runtime_class(name: str) -> Type[Runtime]:
    if name not in config.runtime_names():
        raise config.unknown_runtime(name)
    module = importlib.import_module(f"{__name__}.{name}")
    found: Type[Runtime] = module.RUNTIME
    return found


def runtime_for(settings: Settings) -> Runtime:
    """The settings' profile; its versions are checked here (ConfigError)."""
    return runtime_class(settings.runtime)(settings)


def load_settings(
    config_file: Optional[Path] = None,
    flags: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
    file_text: Optional[str] = None,
    flag_names: bool = True,
) -> Settings:
    """config.load, then the profile's own checks (its versions): everything a
    run needs validated before it changes anything."""
    settings = config.load(config_file, flags, environ, file_text, flag_names)
    runtime = runtime_for(settings)
    known = {check.name for role in Role for check in runtime.preflight_checks(role)}
    unknown = [
        name
        for name in settings.ignore_preflight_errors
        if name.lower() != "all" and name.lower() not in {k.lower() for k in known}
    ]
    if unknown:
        raise ConfigError(
            f"ignore_preflight_errors: the {runtime.name} profile has no preflight check "
            f"named {', '.join(unknown)}",
            hint="Its checks: " + ", ".join(sorted(known)) + " (or all).",
        )
    return settings


def in_order() -> List[Type[Runtime]]:
    """Every profile, the default first."""
    default = Settings().runtime
    names = sorted(config.runtime_names(), key=lambda name: (name != default, name))
    return [runtime_class(name) for name in names]


def profile_fit(facts: Facts) -> Dict[str, str]:
    """Which runtime profile fits this host and why, e.g.
    {"recommended": "kata", "why": "cgroup v2: frakti's kubelets ... cannot run; /dev/kvm usable",
     "frakti": "cgroup v2: ...", "kata": "fits"}."""
    classes = in_order()
    if facts.init_system() != "systemd":
        why = f"init system is {facts.init_system()}: every profile manages services with systemd"
        return {"recommended": "none", "why": why, **{c.name: why for c in classes}}
    profiles = [cls(Settings(runtime=cls.name)) for cls in classes]
    problems = {runtime.name: runtime.host_problems(facts) for runtime in profiles}
    fit = {name: "; ".join(found) or "fits" for name, found in problems.items()}
    ruled_out: List[str] = []
    for runtime in profiles:
        if not problems[runtime.name]:
            why = "; ".join(ruled_out + [runtime.fit_reason(facts)])
            return {"recommended": runtime.name, "why": why, **fit}
        ruled_out += problems[runtime.name]
    why = ". ".join(f"{name}: {'; '.join(found)}" for name, found in problems.items())
    return {"recommended": "none", "why": why, **fit}
