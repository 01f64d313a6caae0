"""Helm credentials: the release's credential Secrets (``<release>``,
``<release>-token``, ``<release>-cert``, FACTS §1) read, written (then the Deployment
rolled the ``kubectl rollout restart`` way and waited for until its new pods are
Ready) and removed, through ``tasks/kubernetes_credentials.py``.

A write changes some keys and keeps every other key as it is: the current values are
read through the API first (kept in memory only, registered with the trail's
redactor) and written back unchanged beside the new ones.

Where the current CA key lives (the chart's Secret layout has no ``ca.key``, FACTS
§1), in this order:

1. key ``ca.key`` of the Secret ``<release>`` — ``rotate_credentials`` writes it there
   (and the drills keep it there), beside ``ca.crt``;
2. ``aws.secrets_manager.ca_secret_id`` of the target (JSON ``{"ca.crt", "ca.key"}``),
   when configured;

and it must be the key of the CA in ``ca.crt``. When neither holds it, the phase that
needs it fails before changing anything, naming both places.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import ConfigError, StepFailed
from core.redact import fingerprint
from runbook.context import StepContext
from targets.base import SECRET_KEYS, PlanPart, Written
from targets.helm.common import config, k8s_op

#: Keys of the Secret ``<release>`` a drill needs (``ca.key`` is optional).
REQUIRED = ("tunnel-id", "tunnel-domain", "tunnel-token", "ca.crt", "tls.crt", "tls.key")


def secret_names(ctx: StepContext) -> list[str]:
    from tasks.kubernetes import credential_secret_names

    return credential_secret_names(config(ctx).release)


def read_secret(ctx: StepContext, name: str) -> dict[str, str] | None:
    """The decoded data of one Secret of the release's namespace (None when absent);
    the secret values (token, keys) are registered with the redactor."""
    from tasks import kubernetes

    cfg = config(ctx)
    data = kubernetes.read_secret_values(ctx.clients.kubernetes, cfg.namespace, name, op=ctx.step)
    for key, value in (data or {}).items():
        if key in SECRET_KEYS:
            ctx.redactor.add(value)
    return data


def read_credentials(ctx: StepContext) -> dict[str, str]:
    return read_secret(ctx, config(ctx).release) or {}


def require(ctx: StepContext, *keys: str) -> dict[str, str]:
    """The named keys of the Secret ``<release>`` (in memory only).

    Raises:
        StepFailed: the Secret is absent or lacks a key (the keys are named).
    """
    cfg = config(ctx)
    data = read_secret(ctx, cfg.release)
    if data is None:
        raise StepFailed(
            ctx.step,
            f'Secret "{cfg.release}" in namespace "{cfg.namespace}" is absent: a drill on '
            "Helm needs the programmatic setup's credential Secret",
        )
    missing = [k for k in keys if not data.get(k, "").strip()]
    if missing:
        raise StepFailed(
            ctx.step,
            f'Secret "{cfg.release}" in namespace "{cfg.namespace}" has no ' + ", ".join(missing),
        )
    return {k: data[k] for k in keys}


def write_credentials(ctx: StepContext, values: Mapping[str, str]) -> dict[str, Any]:
    """Writes the token and certificates (``values``, by their ``data/`` names: every
    key of :data:`REQUIRED`, ``ca.key`` optional) into the release's credential Secrets
    and restarts the Deployment, verified by new ready pods. Only fingerprints are
    recorded (``credentials.written``); the values are registered with the redactor
    first, so no error or log line can carry them. ``ca.key`` (when given) is written
    as key ``ca.key`` of the Secret ``<release>``.

    Raises:
        ConfigError: an input is empty or malformed (the field is named, never the value).
    """
    for key in ("tunnel-token", "tls.key", "ca.crt", "tls.crt", "ca.key"):
        if values.get(key):
            ctx.redactor.add(values[key])
    res = _write_release(ctx, values)
    data = {
        "namespace": config(ctx).namespace,
        "secrets_written": res.secrets_written,
        "fingerprints": res.fingerprints,
        "restarted": res.restarted,
        "pod_template_hash": res.pod_template_hash,
        "ready_pods": res.ready_pods,
    }
    ctx.record("credentials.written", data)
    return data


def _write_release(ctx: StepContext, values: Mapping[str, str]) -> Any:
    """``tasks.kubernetes.write_credentials`` of ``values`` on the target's release."""
    from tasks import kubernetes

    cfg = config(ctx)
    return kubernetes.write_credentials(
        ctx.clients.kubernetes,
        cfg.namespace,
        cfg.release,
        token=values["tunnel-token"],
        ca_crt=values["ca.crt"],
        tls_crt=values["tls.crt"],
        tls_key=values["tls.key"],
        tunnel_id=values["tunnel-id"],
        domain=values["tunnel-domain"],
        deployment=cfg.deployment,
        timeout_s=min(ctx.timeout_s, 120.0),
        ca_key=values.get("ca.key"),
    )


def write_values(ctx: StepContext, values: dict[str, str]) -> dict[str, Any]:
    """Writes ``values`` over the current ones (keys not given are kept as read)."""
    full = {
        **require(ctx, *REQUIRED),
        **{k: v for k, v in read_credentials(ctx).items() if k == "ca.key"},
        **values,
    }
    for key in ("tunnel-token", "tunnel-id", "tunnel-domain"):
        full[key] = full[key].strip()
    return write_credentials(ctx, full)


def write(ctx: StepContext, values: dict[str, str]) -> Written:
    data = write_values(ctx, values)
    return Written(
        {
            "secrets": data["secrets_written"],
            "restarted": data["restarted"],
            "pod_template_hash": data["pod_template_hash"],
        }
    )


def write_plan(ctx: StepContext) -> PlanPart:
    """(resources, operations) of a write through :func:`write` (every credential
    Secret that exists is patched; the programmatic layout is created if none does)."""
    cfg = config(ctx)
    ns = cfg.namespace
    return PlanPart(
        resources=[*(f"Secret/{n}" for n in secret_names(ctx)), f"Deployment/{cfg.deployment}"],
        operations=[
            *(k8s_op("PATCH", "Secret", ns, n) for n in secret_names(ctx)),
            k8s_op("POST", "Secret", ns, note=f"create {cfg.release} only if none of them exists"),
            k8s_op("PATCH", "Deployment", ns, cfg.deployment, note="rollout restart"),
        ],
    )


def store_rotated(ctx: StepContext, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Rotation's store: every credential Secret (the CA key kept beside ``ca.crt``,
    where the rotation drill renews the server certificate from)."""
    result = _write_release(ctx, values)
    data = {
        "secrets": result.secrets_written,
        "fingerprints": result.fingerprints,
        "restarted": result.restarted,
    }
    ctx.record("credentials.stored", {"store": "kubernetes", **data})
    return "kubernetes", data


def deployed_token_fingerprints(ctx: StepContext) -> dict[str, str | None]:
    """Fingerprint of ``tunnel-token`` in every credential Secret that holds one."""
    out: dict[str, str | None] = {}
    for name in secret_names(ctx):
        data = read_secret(ctx, name)
        if data is None or (name.endswith("-cert") and "tunnel-token" not in data):
            continue
        token = (data.get("tunnel-token") or "").strip()
        out[f"Secret/{name}"] = fingerprint(token) if token else None
    return out


def deployed_tls(ctx: StepContext) -> dict[str, str]:
    """``tls.crt`` of every credential Secret that holds one: Secret name → PEM."""
    out: dict[str, str] = {}
    for name in secret_names(ctx):
        data = read_secret(ctx, name)
        if data and data.get("tls.crt"):
            out[f"Secret/{name}"] = data["tls.crt"]
    return out


def wait_ready(ctx: StepContext) -> dict[str, Any]:
    """The Deployment's rollout is complete and its new pods are Ready."""
    from tasks import kubernetes

    cfg = config(ctx)
    phash, pods = kubernetes.wait_ready(
        ctx.clients.kubernetes,
        cfg.namespace,
        cfg.deployment,
        timeout_s=min(ctx.timeout_s, 60.0),
    )
    return {"pod_template_hash": phash, "ready_pods": pods}


def remove_plan(ctx: StepContext) -> PlanPart:
    cfg = config(ctx)
    release, ns = cfg.release, cfg.namespace
    names = secret_names(ctx)
    return PlanPart(
        summary=f"delete Secrets {', '.join(names)} and Job {release}-setup in {ns}",
        resources=[*(f"secret:{ns}/{n}" for n in names), f"job:{ns}/{release}-setup"],
        operations=[
            *(k8s_op("DELETE", "Secret", ns, n) for n in names),
            k8s_op("DELETE", "Job", ns, f"{release}-setup"),
        ],
    )


def remove_credentials(ctx: StepContext) -> dict[str, Any]:
    """Teardown: deletes the Secrets ``<release>``, ``<release>-token``,
    ``<release>-cert`` and the leftover setup hook Job (absent is fine), verified gone;
    recorded as ``credentials.removed``."""
    from tasks import kubernetes

    cfg = config(ctx)
    res = kubernetes.remove_credentials(ctx.clients.kubernetes, cfg.namespace, cfg.release)
    data = {"namespace": cfg.namespace, "deleted": res.deleted, "absent": res.absent}
    ctx.record("credentials.removed", data)
    return data


def present_secrets(ctx: StepContext) -> list[str]:
    """``<namespace>/<name>`` of each credential Secret that exists."""
    cfg = config(ctx)
    return [f"{cfg.namespace}/{n}" for n in secret_names(ctx) if read_secret(ctx, n) is not None]


def ca_key(ctx: StepContext, values: dict[str, str]) -> tuple[str, str]:
    """The current CA's private key and where it came from (see the module docstring).

    Raises:
        StepFailed: neither place holds the key of the CA in ``ca.crt`` (nothing has
            been changed at this point; both places are named).
    """
    from runbook.steps import _rotation as rot
    from tasks import certificates

    cfg = config(ctx)
    sm = ctx.target.aws.secrets_manager if ctx.target.aws else None
    candidates: list[tuple[str, str]] = []
    if values.get("ca.key", "").strip():
        candidates.append((values["ca.key"], f"Secret {cfg.release}/ca.key"))
    if sm is not None and sm.ca_secret_id:
        aws = rot.secrets_client(ctx.target.aws.region if ctx.target.aws else None)
        key = rot.read_aws_ca_key(aws, sm)
        if key is not None:
            ctx.redactor.add(key.get_secret_value())
            candidates.append((key.get_secret_value(), f"AWS secret {sm.ca_secret_id}"))
    problems = []
    for key, source in candidates:
        try:
            certificates.load_ca(values["ca.crt"], key)
        except ConfigError as exc:
            problems.append(f"{source}: {exc.detail}")
            continue
        return key, source
    where = f'key "ca.key" of Secret "{cfg.release}" in namespace "{cfg.namespace}" and ' + (
        f"AWS secret {sm.ca_secret_id} (aws.secrets_manager.ca_secret_id)"
        if sm is not None and sm.ca_secret_id
        else "aws.secrets_manager.ca_secret_id (not configured)"
    )
    raise StepFailed(
        ctx.step,
        "the current CA's private key is not available: looked in "
        + where
        + (f" ({'; '.join(problems)})" if problems else ": neither holds it")
        + "; nothing was changed. Rotate the credentials once (rotate_credentials writes "
        "ca.key) or configure aws.secrets_manager.ca_secret_id",
    )
