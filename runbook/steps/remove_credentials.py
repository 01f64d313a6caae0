"""remove_credentials: destroy the stored tunnel credentials of a retired stack (teardown).

Compose: every file in ``data/`` (token, CA and TLS keys, …) is overwritten with
zeros, fsynced and unlinked (``tasks.credential_files.destroy_credentials``);
``config/`` and the compose file hold no secrets and are kept unless the teardown
was started with ``--remove-config`` (playbook parameter ``remove_config``).
Helm: the three credential Secrets and the leftover setup Job (``runbook.steps._helm``).

check: nothing is left; apply: destroy (evidence: names and fingerprints only);
verify: nothing is left.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from core.errors import ConfigError, StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register


def _remove_config(ctx: StepContext) -> bool:
    value = ctx.params.get("remove_config", False)
    if not isinstance(value, bool):
        raise ConfigError(f"params.remove_config: must be true or false (got {value!r})")
    return value


def _config_paths(ctx: StepContext) -> list[Path]:
    compose = ctx.target.compose
    assert compose is not None
    return [p for p in (compose.config_dir, compose.compose_file) if p is not None]


@register
class RemoveCredentials(Step):
    key = "remove_credentials"
    reversible = False
    kinds = frozenset({"compose", "helm"})
    description = "Destroy the stored tunnel credentials (data/ files, or the Helm Secrets)"

    def plan(self, ctx: StepContext) -> Plan:
        if ctx.target.kind == "helm":
            helm = ctx.target.helm
            assert helm is not None
            release, ns = helm.release, helm.namespace
            names = [release, f"{release}-token", f"{release}-cert"]
            return Plan(
                step=self.key,
                target=ctx.incident.target,
                summary=f"delete Secrets {', '.join(names)} and Job {release}-setup in {ns}",
                resources=[*(f"secret:{ns}/{n}" for n in names), f"job:{ns}/{release}-setup"],
                api_calls=[
                    *(f"DELETE /api/v1/namespaces/{ns}/secrets/{n}" for n in names),
                    f"DELETE /apis/batch/v1/namespaces/{ns}/jobs/{release}-setup",
                ],
                parameters={},
            )
        from tasks import credential_files

        compose = ctx.target.compose
        assert compose is not None
        present = sorted(credential_files.read_fingerprints(compose.data_dir))
        remove_config = _remove_config(ctx)
        kept = "removed" if remove_config else "kept"
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary=(
                f"overwrite with zeros and unlink {len(present)} file(s) in {compose.data_dir}; "
                f"config/ and the compose file {kept}"
            ),
            resources=[
                *(f"file:{Path(compose.data_dir) / n}" for n in present),
                *(f"file:{p}" for p in _config_paths(ctx) if remove_config),
            ],
            api_calls=[],
            parameters={"remove_config": remove_config, "data_dir": str(compose.data_dir)},
        )

    def _left(self, ctx: StepContext) -> list[str]:
        from tasks import credential_files

        compose = ctx.target.compose
        assert compose is not None
        left = [f"data/{n}" for n in credential_files.read_fingerprints(compose.data_dir)]
        if _remove_config(ctx):
            left += [str(p) for p in _config_paths(ctx) if p.exists()]
        return left

    def check(self, ctx: StepContext) -> str | None:
        if ctx.target.kind == "helm":
            return None  # the Helm removal is idempotent and verifies itself
        if not self._left(ctx):
            return "no credential file is left in data/"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.target.kind == "helm":
            from runbook.steps import _helm

            return _helm.remove_credentials(ctx)  # records credentials.removed itself
        from tasks import credential_files

        compose = ctx.target.compose
        assert compose is not None
        before = credential_files.read_fingerprints(compose.data_dir)
        destroyed = credential_files.destroy_credentials(compose.data_dir)
        data: dict[str, Any] = {
            "data_dir": str(compose.data_dir),
            "destroyed": destroyed,
            "fingerprints": before,
        }
        ctx.record("credentials.destroyed", data)
        if _remove_config(ctx):
            removed = []
            for path in _config_paths(ctx):
                if path.is_dir():
                    shutil.rmtree(path)
                    removed.append(str(path))
                elif path.exists():
                    path.unlink()
                    removed.append(str(path))
            ctx.record("config.removed", {"paths": removed})
            data["config_removed"] = removed
        return data

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.target.kind == "helm":
            return {}
        left = self._left(ctx)
        if left:
            raise StepFailed(self.key, f"still present after removal: {', '.join(left)}")
        return {"left": []}
