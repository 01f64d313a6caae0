"""The Compose driver: a Docker Compose project seen through the Docker Engine API
(``tasks/compose.py``, ``tasks/compose_restore.py``) and its ``data/`` directory
(``tasks/credential_files.py``).

Compose cannot isolate a container from the network without stopping it, so this
driver has no ``isolate`` capability: containment is the stop itself, after capture.
"""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed
from runbook.context import StepContext
from targets import base
from targets.base import PlanPart, Written
from targets.compose import credentials, evidence, restore, workload


class ComposeDriver:
    kind = "compose"
    capabilities = frozenset(
        {
            base.CAPTURE,
            base.STOP,
            base.REMAINING,
            base.READ_CREDENTIALS,
            base.WRITE_CREDENTIALS,
            base.REMOVE_CREDENTIALS,
            base.RESTORE,
            base.LOG_SOURCES,
            base.SERVED_CERTIFICATE,
        }
    )
    #: ``data/`` keeps the CA key: material read back without it is incomplete.
    keeps_ca_key = True
    store_name = "data/"

    def resources(self, ctx: StepContext) -> list[str]:
        cfg = ctx.target.compose
        assert cfg is not None
        return [f"compose-project:{cfg.project}", f"dir:{cfg.data_dir}"]

    # -- capture ----------------------------------------------------------------------
    def capture_plan(self, ctx: StepContext, deadline_s: float) -> PlanPart:
        return evidence.capture_plan(ctx, deadline_s)

    def capture(self, ctx: StepContext, deadline_s: float, have: set[str]) -> dict[str, Any]:
        return evidence.capture(ctx, deadline_s, have)

    # -- stop -------------------------------------------------------------------------
    def stop_plan(self, ctx: StepContext) -> PlanPart:
        return workload.stop_plan(ctx)

    def stopped_reason(self, ctx: StepContext) -> str | None:
        if not workload.remaining(ctx):
            return f"nothing of compose project {workload.project(ctx)!r} is left"
        return None

    def stop(self, ctx: StepContext) -> dict[str, Any]:
        return workload.stop(ctx)

    def verify_stopped(self, ctx: StepContext) -> dict[str, Any]:
        base.nothing_left(ctx, workload.remaining(ctx), "stop")
        return {"remaining": []}

    # -- what remains -----------------------------------------------------------------
    def remaining(self, ctx: StepContext) -> list[str]:
        return workload.remaining(ctx)

    def teardown_leftovers(self, ctx: StepContext) -> tuple[list[str], dict[str, Any]]:
        from tasks import credential_files

        left = workload.remaining(ctx)
        files = sorted(credential_files.read_fingerprints(credentials.data_dir(ctx)))
        problems = [f"still present: {x}" for x in left]
        problems += [f"secret file still in data/: {f}" for f in files]
        return problems, {"containers": left, "data_files": files}

    # -- credentials ------------------------------------------------------------------
    def read_credentials(self, ctx: StepContext) -> dict[str, str]:
        return credentials.read_credentials(ctx)

    def require_credentials(self, ctx: StepContext, *keys: str) -> dict[str, str]:
        return credentials.require(ctx, *keys)

    def ca_key(self, ctx: StepContext, values: dict[str, str]) -> tuple[str, str]:
        if not values.get("ca.key", "").strip():
            raise StepFailed(ctx.step, "data/ca.key: cannot read the current CA's key")
        return values["ca.key"], "data/ca.key"

    def credential_source(self, ctx: StepContext, key: str) -> str:
        return f"data/{key}"

    def credential_problems(self, ctx: StepContext) -> list[str]:
        return credentials.metadata_problems(ctx)

    def write_credentials_plan(self, ctx: StepContext, keys: tuple[str, ...]) -> PlanPart:
        part = credentials.write_plan(ctx, keys)
        if "tunnel-token" in keys:
            part.resources.append(f"container:{workload.container_name(ctx, workload.CLOUDFLARED)}")
            part.operations += workload.RESTART_OPERATIONS
        return part

    def write_credentials(self, ctx: StepContext, values: dict[str, str]) -> Written:
        """Writes the files atomically; a new token re-creates cloudflared with it (the
        proxy hot-reloads its certificate files, so nothing else restarts)."""
        files = credentials.write(ctx, values)
        downtime = 0.0
        if "tunnel-token" in values:
            downtime = workload.restart_cloudflared(ctx, values["tunnel-token"].strip())
        return Written({"files": files}, downtime)

    def store_rotated_plan(self, ctx: StepContext) -> PlanPart:
        return PlanPart(
            resources=[f"dir:{credentials.data_dir(ctx)}"],
            operations=credentials.write_plan(ctx, base.CREDENTIAL_KEYS).operations,
        )

    def store_rotated(self, ctx: StepContext, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """Rotation's store: every ``data/`` file (the stack is stopped; restore reads
        them). Returns the outcome key and its evidence."""
        if "ca.key" not in values:
            raise StepFailed(
                ctx.step, "ca.key: the Compose store needs the CA key, which is missing"
            )
        files = credentials.write(ctx, values)
        ctx.record("credentials.stored", {"store": "data/", "files": files})
        return "data", files

    def deployed_token_fingerprints(self, ctx: StepContext) -> dict[str, str | None]:
        return {
            "container": workload.running_token_fingerprint(ctx),
            "data/tunnel-token": credentials.token_fingerprint(ctx),
        }

    def served_certificates(self, ctx: StepContext) -> dict[str, str]:
        return {"proxy": workload.served_certificate(ctx)}

    def running(self, ctx: StepContext) -> Any:
        return workload.stack_running(ctx)

    def remove_credentials_plan(self, ctx: StepContext) -> PlanPart:
        return credentials.remove_plan(ctx)

    def credentials_left(self, ctx: StepContext) -> list[str]:
        return credentials.left(ctx)

    def credentials_removed_reason(self, ctx: StepContext) -> str | None:
        return None if credentials.left(ctx) else "no credential file is left in data/"

    def remove_credentials(self, ctx: StepContext) -> dict[str, Any]:
        return credentials.remove(ctx)

    def verify_credentials_removed(self, ctx: StepContext) -> dict[str, Any]:
        base.nothing_left(ctx, credentials.left(ctx), "removal")
        return {"left": []}

    # -- restore ----------------------------------------------------------------------
    def restore_plan(self, ctx: StepContext) -> PlanPart:
        return restore.plan(ctx)

    def restored_reason(self, ctx: StepContext) -> str | None:
        return restore.restored_reason(ctx)

    def restore(self, ctx: StepContext) -> dict[str, Any]:
        return restore.restore(ctx)

    def verify_restored(self, ctx: StepContext) -> dict[str, Any]:
        return restore.verify(ctx)

    # -- logs -------------------------------------------------------------------------
    def log_sources_plan(self, ctx: StepContext) -> PlanPart:
        return PlanPart(
            resources=[f"compose-project:{workload.project(ctx)} (running containers)"],
            reads=["GET /containers/{id}/logs?timestamps=1&since&until"],
        )

    def live_logs(self, ctx: StepContext) -> list[base.LiveLog]:
        from tasks import compose
        from tasks.logs.collect_docker import collect_container

        client = ctx.clients.docker
        out = []
        for container in compose.project_containers(client, workload.project(ctx)):
            if container.status != "running":
                continue

            def collect(window: Any, scratch: Any, name: str, cid: str = container.id) -> Any:
                return collect_container(
                    client, cid, window, scratch, name=name, redactor=ctx.redactor
                )

            out.append(base.LiveLog(name=container.name, collect=collect))
        return out


DRIVER = ComposeDriver()
