"""The settings an install used, recorded on the host without its secrets:
what `status`, `routes` (and its timer), `join-command` and `reset` read when
they are run without -c, so they judge the host by what was installed rather
than by the defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frakti_install.config import as_config_file, recorded_file
from frakti_install.engine import Check, Step
from frakti_install.steps.common import file_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

# The join is done once; its token is a secret and never kept. The drain's
# kubeconfig is a copy of the admin's, there for one upgrade only.
LEFT_OUT = ("join_endpoint", "join_token", "join_ca_hash", "drain_kubeconfig")


class RecordSettings(Step):
    name = "settings"
    title = "Record this install's settings (without secrets)"

    def check(self, ctx: Context) -> Check:
        path = recorded_file(ctx.settings.state_dir)
        actions = file_actions(ctx, path, as_config_file(ctx.settings, LEFT_OUT), mode=0o600)
        if not actions:
            return Check.ok(f"recorded in {path}")
        return Check(actions)
