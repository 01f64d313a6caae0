"""The Helm driver: a Helm release in a Kubernetes namespace, through the Kubernetes
API only (``tasks/kubernetes*.py``; no helm or kubectl binary).

What the engine adds around the adapter lives here: evidence written right after each
side effect, resumption (subjects already stored are not stored twice), plans that
list every mutating call as an operation, and secret hygiene (Secret values are never
captured; the values the process does meet are registered with the trail's redactor).
Transient answers (5xx, unreachable API) are retried a few times — every adapter call
used here is idempotent — and then fail the step, naming the resource.
"""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from targets import base
from targets.base import PlanPart, Written
from targets.helm import capture as _capture
from targets.helm import credentials as _credentials
from targets.helm import restore as _restore
from targets.helm import stop as _stop
from targets.helm.capture import capture
from targets.helm.common import config
from targets.helm.credentials import remove_credentials, write_credentials
from targets.helm.restore import restore
from targets.helm.scrub import scrub_manifest
from targets.helm.stop import isolate, remaining, uninstall

__all__ = [
    "DRIVER",
    "HelmDriver",
    "capture",
    "isolate",
    "remaining",
    "remove_credentials",
    "restore",
    "scrub_manifest",
    "uninstall",
    "write_credentials",
]


class HelmDriver:
    kind = "helm"
    capabilities = base.ALL_CAPABILITIES
    #: The chart's Secret layout has no ``ca.key`` of its own (FACTS §1): material read
    #: back without it is still complete (rotation keeps it there when it can).
    keeps_ca_key = False
    store_name = "kubernetes"

    def resources(self, ctx: StepContext) -> list[str]:
        cfg = config(ctx)
        return [f"helm-release:{cfg.namespace}/{cfg.release}"]

    # -- capture ----------------------------------------------------------------------
    def capture_plan(self, ctx: StepContext, deadline_s: float) -> PlanPart:
        return _capture.capture_plan(ctx, deadline_s)

    def capture(self, ctx: StepContext, deadline_s: float, have: set[str]) -> dict[str, Any]:
        return _capture.capture(ctx, deadline_s)

    # -- stop -------------------------------------------------------------------------
    def stop_plan(self, ctx: StepContext) -> PlanPart:
        return _stop.stop_plan(ctx)

    def stopped_reason(self, ctx: StepContext) -> str | None:
        return _stop.stopped_reason(ctx)

    def stop(self, ctx: StepContext) -> dict[str, Any]:
        return _stop.stop(ctx)

    def verify_stopped(self, ctx: StepContext) -> dict[str, Any]:
        return _stop.verify_stopped(ctx)

    # -- what remains -----------------------------------------------------------------
    def remaining(self, ctx: StepContext) -> list[str]:
        return _stop.remaining(ctx)

    def teardown_leftovers(self, ctx: StepContext) -> tuple[list[str], dict[str, Any]]:
        left, secrets = _stop.remaining(ctx), _credentials.present_secrets(ctx)
        problems = [f"still in the cluster: {x}" for x in left]
        problems += [f"credential Secret still present: {x}" for x in secrets]
        return problems, {"objects": left, "secrets": secrets}

    # -- credentials ------------------------------------------------------------------
    def read_credentials(self, ctx: StepContext) -> dict[str, str]:
        return _credentials.read_credentials(ctx)

    def require_credentials(self, ctx: StepContext, *keys: str) -> dict[str, str]:
        return _credentials.require(ctx, *keys)

    def ca_key(self, ctx: StepContext, values: dict[str, str]) -> tuple[str, str]:
        return _credentials.ca_key(ctx, values)

    def credential_source(self, ctx: StepContext, key: str) -> str:
        return f"{key} of Secret {config(ctx).release}"

    def credential_problems(self, ctx: StepContext) -> list[str]:
        return []

    def write_credentials_plan(self, ctx: StepContext, keys: tuple[str, ...]) -> PlanPart:
        return _credentials.write_plan(ctx)

    def write_credentials(self, ctx: StepContext, values: dict[str, str]) -> Written:
        """Rolling update: the old pods serve until the new ones are Ready."""
        return _credentials.write(ctx, values)

    def store_rotated_plan(self, ctx: StepContext) -> PlanPart:
        part = _credentials.write_plan(ctx)
        cfg = config(ctx)
        part.resources = [f"k8s-secret:{cfg.namespace}/{n}" for n in _credentials.secret_names(ctx)]
        return part

    def store_rotated(self, ctx: StepContext, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
        return _credentials.store_rotated(ctx, values)

    def deployed_token_fingerprints(self, ctx: StepContext) -> dict[str, str | None]:
        return _credentials.deployed_token_fingerprints(ctx)

    def served_certificates(self, ctx: StepContext) -> dict[str, str]:
        return _credentials.deployed_tls(ctx)

    def running(self, ctx: StepContext) -> Any:
        return _credentials.wait_ready(ctx)

    def remove_credentials_plan(self, ctx: StepContext) -> PlanPart:
        return _credentials.remove_plan(ctx)

    def credentials_left(self, ctx: StepContext) -> list[str]:
        return _credentials.present_secrets(ctx)

    def credentials_removed_reason(self, ctx: StepContext) -> str | None:
        return None  # the removal is idempotent and verifies itself

    def remove_credentials(self, ctx: StepContext) -> dict[str, Any]:
        return _credentials.remove_credentials(ctx)  # records credentials.removed itself

    def verify_credentials_removed(self, ctx: StepContext) -> dict[str, Any]:
        return {}

    # -- restore ----------------------------------------------------------------------
    def restore_plan(self, ctx: StepContext) -> PlanPart:
        return _restore.plan(ctx)

    def restored_reason(self, ctx: StepContext) -> str | None:
        return None

    def restore(self, ctx: StepContext) -> dict[str, Any]:
        return dict(_restore.restore(ctx))

    def verify_restored(self, ctx: StepContext) -> dict[str, Any]:
        return {}

    # -- logs -------------------------------------------------------------------------
    def log_sources_plan(self, ctx: StepContext) -> PlanPart:
        return PlanPart()

    def live_logs(self, ctx: StepContext) -> list[base.LiveLog]:
        """None: the release's pod logs are what capture stored (the pods are gone by
        the time logs are reviewed)."""
        return []


DRIVER = HelmDriver()
