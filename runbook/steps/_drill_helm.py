"""The Helm side of the rotation-drill steps: the release's credential Secrets as the
deployed state, written through :func:`runbook.steps._helm.write_credentials` (which
patches every credential Secret that exists, restarts the Deployment the
``kubectl rollout restart`` way and waits for new ready pods).

A phase changes one part of the credentials and keeps every other key as it is: the
current values are read through the API first (kept in memory only, registered with
the trail's redactor) and written back unchanged beside the new ones. The same
read values are what a rollback writes back.

Where the current CA key lives (the server-certificate phase needs it and the chart's
Secret layout has no ``ca.key``, FACTS §1), in this order:

1. key ``ca.key`` of the Secret ``<release>`` — ``rotate_credentials`` writes it there
   (and the drill keeps it there), beside ``ca.crt``;
2. ``aws.secrets_manager.ca_secret_id`` of the target (JSON ``{"ca.crt", "ca.key"}``),
   when configured;

and it must be the key of the CA in ``ca.crt``. When neither holds it, the phase fails
before changing anything, naming both places.
"""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client

from core.errors import ConfigError, StepFailed
from core.redact import fingerprint
from runbook.context import StepContext
from runbook.steps import _helm

#: Keys of the Secret ``<release>`` a drill needs (``ca.key`` is optional).
REQUIRED = ("tunnel-id", "tunnel-domain", "tunnel-token", "ca.crt", "tls.crt", "tls.key")


def is_helm(ctx: StepContext) -> bool:
    return ctx.target.kind == "helm"


def secret_names(ctx: StepContext) -> list[str]:
    rel = _helm.config(ctx).release
    return [rel, f"{rel}-token", f"{rel}-cert"]


def read_secret(ctx: StepContext, name: str) -> dict[str, str] | None:
    """The decoded data of one Secret of the release's namespace (None when absent);
    every value is registered with the redactor."""
    from tasks.kubernetes_calls import k8s_call

    cfg = _helm.config(ctx)
    secret = _helm._retrying(
        ctx,
        k8s_call,
        ctx.step,
        "get",
        "Secret",
        name,
        cfg.namespace,
        client.CoreV1Api(ctx.clients.kubernetes).read_namespaced_secret,
        name,
        cfg.namespace,
        missing_ok=True,
    )
    if secret is None:
        return None
    data = {
        k: base64.b64decode(v).decode("utf-8", errors="replace")
        for k, v in (secret.data or {}).items()
    }
    for value in data.values():
        ctx.redactor.add(value)
    return data


def current_values(ctx: StepContext) -> dict[str, str]:
    """The credentials deployed now, from the Secret ``<release>`` (in memory only).

    Raises:
        StepFailed: the Secret is absent or lacks a key (the keys are named).
    """
    cfg = _helm.config(ctx)
    data = read_secret(ctx, cfg.release)
    if data is None:
        raise StepFailed(
            ctx.step,
            f'Secret "{cfg.release}" in namespace "{cfg.namespace}" is absent: a drill on '
            "Helm needs the programmatic setup's credential Secret",
        )
    missing = [k for k in REQUIRED if not data.get(k, "").strip()]
    if missing:
        raise StepFailed(
            ctx.step,
            f'Secret "{cfg.release}" in namespace "{cfg.namespace}" has no ' + ", ".join(missing),
        )
    return {k: data[k] for k in (*REQUIRED, "ca.key") if k in data}


def write(ctx: StepContext, values: dict[str, str]) -> dict[str, Any]:
    """Writes ``values`` (a full set, as :func:`current_values` returns) into the
    release's credential Secrets, rolls the Deployment and waits for new ready pods.
    Recorded as ``credentials.written`` (fingerprints only)."""
    return _helm.write_credentials(
        ctx,
        token=values["tunnel-token"].strip(),
        ca_crt=values["ca.crt"],
        tls_crt=values["tls.crt"],
        tls_key=values["tls.key"],
        tunnel_id=values["tunnel-id"].strip(),
        domain=values["tunnel-domain"].strip(),
        ca_key=values.get("ca.key"),
    )


def domain(ctx: StepContext, values: dict[str, str] | None = None) -> str:
    if ctx.target.tunnel.domain:
        return ctx.target.tunnel.domain
    return (values or current_values(ctx))["tunnel-domain"].strip()


def deployed_token_fingerprints(ctx: StepContext) -> dict[str, str | None]:
    """Fingerprint of ``tunnel-token`` in every credential Secret that exists."""
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

    cfg = _helm.config(ctx)
    phash, pods = _helm._retrying(
        ctx,
        kubernetes.wait_ready,
        ctx.clients.kubernetes,
        cfg.namespace,
        cfg.deployment,
        timeout_s=min(ctx.timeout_s, 60.0),
    )
    return {"pod_template_hash": phash, "ready_pods": pods}


def ca_key(ctx: StepContext, values: dict[str, str]) -> tuple[str, str]:
    """The current CA's private key and where it came from (see the module docstring).

    Raises:
        StepFailed: neither place holds the key of the CA in ``ca.crt`` (nothing has
            been changed at this point; both places are named).
    """
    from runbook.steps import _rotation as rot
    from tasks import certificates

    cfg = _helm.config(ctx)
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


def plan_writes(ctx: StepContext) -> tuple[list[str], list[str]]:
    """(resources, api_calls) of a write through :func:`write`."""
    cfg = _helm.config(ctx)
    ns = cfg.namespace
    resources = [
        *(f"Secret/{n}" for n in secret_names(ctx)),
        f"Deployment/{cfg.deployment}",
    ]
    calls = [
        *(f"PATCH {_helm.api_path('Secret', ns, n)}" for n in secret_names(ctx)),
        f"PATCH {_helm.api_path('Deployment', ns, cfg.deployment)} (rollout restart)",
    ]
    return resources, calls
