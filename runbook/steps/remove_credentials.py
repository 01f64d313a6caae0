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

from runbook.registry import DriverCalls, DriverStep, register
from targets import base


@register
class RemoveCredentials(DriverStep):
    key = "remove_credentials"
    reversible = False
    needs = frozenset({base.REMOVE_CREDENTIALS})
    description = "Destroy the stored tunnel credentials (data/ files, or the Helm Secrets)"
    calls = DriverCalls(
        plan="remove_credentials_plan",
        check="credentials_removed_reason",
        apply="remove_credentials",
        verify="verify_credentials_removed",
    )
