"""remove_credentials: destroy the stored tunnel credentials of a retired stack (teardown).

The target's driver does it. Compose: every file in ``data/`` (token, CA and TLS
keys, …) is overwritten with zeros, fsynced and unlinked; ``config/`` and the compose
file hold no secrets and are kept unless the teardown was started with
``--remove-config`` (playbook parameter ``remove_config``). Helm: the three credential
Secrets and the leftover setup Job.

check: nothing is left; apply: destroy (evidence: names and fingerprints only);
verify: nothing is left.
"""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from targets import base


@register
class RemoveCredentials(Step):
    key = "remove_credentials"
    reversible = False
    needs = frozenset({base.REMOVE_CREDENTIALS})
    description = "Destroy the stored tunnel credentials (data/ files, or the Helm Secrets)"

    def plan(self, ctx: StepContext) -> Plan:
        return self.planned(ctx, ctx.driver.remove_credentials_plan(ctx))

    def check(self, ctx: StepContext) -> str | None:
        return ctx.driver.credentials_removed_reason(ctx)

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        return ctx.driver.remove_credentials(ctx)

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        return ctx.driver.verify_credentials_removed(ctx)
