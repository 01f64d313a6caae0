"""The Helm side of the engine's steps: functions taking the step's context.

The steps (``capture_evidence``, ``stop_stack``, and the teardown, rotation and restore
steps) call these for ``kind: helm`` targets; the Kubernetes work itself is done by the
adapter in ``tasks/kubernetes.py`` through ``ctx.clients.kubernetes``. What is added here
is what the engine needs around it: evidence written right after each side effect,
resumption (subjects already stored are not stored twice), plans that name every
mutating call, and secret hygiene (Secret values are never captured; the values the
process does meet are registered with the trail's redactor).

Transient answers (5xx, unreachable API) are retried a few times — every adapter call
used here is idempotent — and then fail the step, naming the resource.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import yaml
from kubernetes import client

from core import failpoints
from core.errors import StepFailed, TransientError
from core.redact import fingerprint
from runbook.context import StepContext
from runbook.inventory import HelmConfig
from runbook.steps._evidence import dumps

T = TypeVar("T")

DEFAULT_DEADLINE_S = 5.0
TRANSIENT_ATTEMPTS = 3
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANIFEST_SUBJECT = "helm-manifest"
_SECRET_NAME = re.compile(r"(?i)(token|secret|passw|key|credential|auth)")

# kind → (API path prefix, plural): how the plan names each call as an HTTP request.
KIND_PATHS: dict[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
}

# helm/helm pkg/releaseutil/kind_sorter.go: InstallOrder (the kinds restore can create).
INSTALL_ORDER: tuple[str, ...] = (
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
)


# ------------------------------------------------------------------ basics


def config(ctx: StepContext) -> HelmConfig:
    """The target's ``helm`` section (the inventory guarantees it for kind helm)."""
    helm = ctx.target.helm
    if helm is None:
        raise StepFailed(ctx.step, f"target {ctx.incident.target!r} has no 'helm' section")
    return helm


def api_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KIND_PATHS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def _retrying(ctx: StepContext, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs an idempotent adapter call, retrying transient failures (each recorded);
    the last one fails the step with the adapter's detail, which names the resource."""
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return fn(*args, **kwargs)
        except TransientError as exc:
            if attempt == TRANSIENT_ATTEMPTS:
                raise StepFailed(
                    ctx.step, f"{exc.detail} (gave up after {attempt} attempts)"
                ) from None
            ctx.record("k8s.retry", {"attempt": attempt, "error": exc.detail})
            time.sleep(0.3 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _subjects(ctx: StepContext, *, any_step: bool) -> set[str]:
    records = ctx.trail.records() if any_step else ctx.step_records()
    return {r.data.get("subject", "") for r in records if r.kind == "artifact"}


def _subject(artifact_name: str) -> str:
    """``logs/<pod>/<c>.log`` → ``logs:<pod>/<c>.log``; ``objects/x.yaml`` → ``objects:x.yaml``."""
    head, _, rest = artifact_name.partition("/")
    return f"{head}:{rest}"


# ------------------------------------------------------------------ secret hygiene


def _scrub_env(node: Any) -> Any:
    """Replaces literal values of secret-looking env variables anywhere in an object
    (pod specs, templates) by their fingerprint; ``valueFrom`` references stay."""
    if isinstance(node, dict):
        out = {k: _scrub_env(v) for k, v in node.items()}
        env = out.get("env")
        if isinstance(env, list):
            out["env"] = [
                {**e, "value": fingerprint(str(e["value"]))}
                if isinstance(e, dict) and "value" in e and _SECRET_NAME.search(str(e.get("name")))
                else e
                for e in env
            ]
        return out
    if isinstance(node, list):
        return [_scrub_env(v) for v in node]
    return node


def _scrub_doc(doc: Any) -> Any:
    """A manifest or object document without secret values: Secret ``data`` /
    ``stringData`` values become fingerprints, secret-looking env literals too."""
    if not isinstance(doc, dict):
        return doc
    doc = _scrub_env(doc)
    if doc.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if isinstance(doc.get(key), dict):
                doc[key] = {k: fingerprint(str(v)) for k, v in doc[key].items()}
        annotations = (doc.get("metadata") or {}).get("annotations") or {}
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return doc


def scrub_yaml(raw: bytes) -> bytes:
    """Multi-document YAML with every Secret value replaced by its fingerprint."""
    docs = [_scrub_doc(d) for d in yaml.safe_load_all(raw) if d is not None]
    return yaml.safe_dump_all(docs, sort_keys=False).encode() if docs else b""


_DOC_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")
_SOURCE = re.compile(r"^# Source: (.+)$", re.M)


def scrub_manifest(manifest: str) -> bytes:
    """A rendered release manifest with every Secret value replaced by its fingerprint,
    keeping Helm's ``# Source:`` lines (uninstall order within a kind depends on them,
    so a plan made from the stored copy equals one made from the cluster)."""
    out: list[str] = []
    for chunk in _DOC_SEPARATOR.split(manifest):
        doc = yaml.safe_load(chunk) if chunk.strip() else None
        if doc is None:
            continue
        source = _SOURCE.search(chunk)
        header = f"# Source: {source.group(1).strip()}\n" if source else ""
        out.append(f"---\n{header}{yaml.safe_dump(_scrub_doc(doc), sort_keys=False)}")
    return "".join(out).encode()


def _register_secret_values(ctx: StepContext) -> dict[str, str]:
    """Reads the release's credential Secrets only to register their values with the
    trail's redactor (a token in a debug log line is then removed), and returns the
    fingerprints of the public certificates they hold. Nothing read here is stored."""
    from tasks.kubernetes_calls import k8s_call
    from tasks.tunnels import pem_fingerprint

    cfg = config(ctx)
    core = client.CoreV1Api(ctx.clients.kubernetes)
    certs: dict[str, str] = {}
    for name in (cfg.release, f"{cfg.release}-token", f"{cfg.release}-cert"):
        try:
            secret = k8s_call(
                ctx.step,
                "get",
                "Secret",
                name,
                cfg.namespace,
                core.read_namespaced_secret,
                name,
                cfg.namespace,
                missing_ok=True,
            )
        except (StepFailed, TransientError) as exc:
            certs[f"{name}"] = f"unreadable: {exc.detail}"
            continue
        for key, encoded in ((secret.data or {}) if secret else {}).items():
            value = base64.b64decode(encoded).decode("utf-8", errors="replace")
            ctx.redactor.add(value)
            if key in ("ca.crt", "tls.crt"):
                try:
                    certs[f"{name}/{key}"] = pem_fingerprint(value)
                except ValueError:
                    certs[f"{name}/{key}"] = "unreadable: not a PEM certificate"
    return certs


# ------------------------------------------------------------------ capture


def capture_plan(ctx: StepContext) -> tuple[list[str], list[str]]:
    """(resources, api_calls) of a capture: read-only."""
    cfg = config(ctx)
    ns, rel = cfg.namespace, cfg.release
    sel = f"labelSelector={INSTANCE_LABEL}={rel}"
    return (
        [f"helm-release:{ns}/{rel}"],
        [
            f"GET {api_path('Pod', ns)}?{sel}",
            f"GET {api_path('Pod', ns)}/{{pod}}/log?container={{c}}&timestamps=true&previous=…",
            f"GET {api_path('Deployment', ns)}?{sel}",
            f"GET {api_path('ReplicaSet', ns)}?{sel}",
            f"GET {api_path('Job', ns)}?{sel}",
            f"GET {api_path('CronJob', ns)}?{sel}",
            f"GET {api_path('NetworkPolicy', ns)}",
            f"GET /api/v1/namespaces/{ns}/events",
            f"GET {api_path('Secret', ns)} (metadata and key names only are kept)",
        ],
    )


def _release_pods(ctx: StepContext) -> list[str]:
    from tasks.kubernetes_calls import k8s_call

    cfg = config(ctx)
    core = client.CoreV1Api(ctx.clients.kubernetes)
    pods = _retrying(
        ctx,
        k8s_call,
        ctx.step,
        "list",
        "Pod",
        None,
        cfg.namespace,
        core.list_namespaced_pod,
        cfg.namespace,
        label_selector=f"{INSTANCE_LABEL}={cfg.release}",
    )
    return sorted(p.metadata.name for p in pods.items)


def capture(ctx: StepContext, *, skip_if_captured: bool = False) -> dict[str, Any]:
    """Captures the release's logs (both containers of every pod, ``previous`` logs,
    timestamps), objects as YAML and Secrets as metadata + key names, each stored as an
    artifact; bounded by ``params.deadline_s``.

    Resumable: subjects this step already stored are skipped. With
    ``skip_if_captured`` (``stop_stack``), an earlier complete capture in this incident
    of the same pods (by any step) means nothing is read again.
    """
    from tasks import kubernetes

    cfg = config(ctx)
    deadline = float(ctx.params.get("deadline_s", DEFAULT_DEADLINE_S))
    if skip_if_captured:
        covered: set[str] = set()
        for rec in ctx.trail.records():
            if rec.kind == "evidence.captured" and rec.data.get("complete"):
                covered |= set(rec.data.get("pods", []))
        if covered and set(_release_pods(ctx)) <= covered:
            return {"skipped": "captured earlier in this incident", "pods": sorted(covered)}
    have = _subjects(ctx, any_step=skip_if_captured)
    certs = _register_secret_values(ctx)
    result = kubernetes.capture(
        ctx.clients.kubernetes, cfg.namespace, cfg.release, deadline_s=deadline
    )
    stored: list[str] = []
    for name, raw in sorted(result.artifacts.items()):
        subject = _subject(name)
        if subject in have:
            continue
        is_log = name.startswith("logs/")
        ctx.artifact(
            raw if is_log else scrub_yaml(raw),
            name=name,
            media_type="text/plain" if is_log else "application/yaml",
            subject=subject,
            partial=name in result.truncated,
        )
        stored.append(subject)
    if "helm-certificates" not in have and certs:
        ctx.artifact(
            dumps(certs),
            name="certificate-fingerprints.json",
            media_type="application/json",
            subject="helm-certificates",
        )
        stored.append("helm-certificates")
    if result.incomplete:
        ctx.record("capture.incomplete", {"incomplete": result.incomplete, "errors": result.errors})
    if not result.pods:
        ctx.record(
            "capture.incomplete",
            {"pods": f'no pod labelled {INSTANCE_LABEL}={cfg.release} in "{cfg.namespace}"'},
        )
    summary = {
        "pods": result.pods,
        "complete": result.complete and bool(result.pods),
        "secrets": [s.name for s in result.secrets],
        "elapsed_s": round(result.elapsed_s, 3),
    }
    ctx.record("evidence.captured", summary)
    return {
        **summary,
        "stored": stored,
        "already_stored": sorted(have & set(map(_subject, result.artifacts))),
    }


# ------------------------------------------------------------------ isolate / uninstall


def isolate(ctx: StepContext) -> dict[str, Any]:
    """Deny-all NetworkPolicy on the release's pods; recorded as ``stack.isolated``."""
    from tasks import kubernetes

    cfg = config(ctx)
    res = _retrying(ctx, kubernetes.isolate, ctx.clients.kubernetes, cfg.namespace, cfg.release)
    data = {"policy": res.policy, "created": res.created, "namespace": cfg.namespace}
    ctx.record("stack.isolated", data)
    return data


def _stored_manifest(ctx: StepContext) -> Any:
    """The newest manifest artifact record of this incident (any step), or None."""
    found = [
        r
        for r in ctx.trail.records()
        if r.kind == "artifact" and r.data.get("subject", "").startswith(MANIFEST_SUBJECT + ":")
    ]
    return found[-1] if found else None


def uninstall(ctx: StepContext) -> dict[str, Any]:
    """``helm uninstall --no-hooks``: stores the decoded release manifest (scrubbed and
    redacted) as an artifact BEFORE deleting anything — ``restore`` re-applies it —
    then deletes the release the adapter's way and records ``stack.stopped``."""
    from tasks import kubernetes

    cfg = config(ctx)
    api = ctx.clients.kubernetes
    helm, secrets = _retrying(ctx, kubernetes.read_release, api, cfg.namespace, cfg.release)
    if helm is not None:
        subject = f"{MANIFEST_SUBJECT}:{cfg.release}.v{helm.version}"
        if subject not in _subjects(ctx, any_step=True):
            ctx.artifact(
                scrub_manifest(helm.manifest),
                name=f"{cfg.release}.v{helm.version}.manifest.yaml",
                media_type="application/yaml",
                subject=subject,
                release=cfg.release,
                namespace=cfg.namespace,
                revision=helm.version,
                release_secrets=secrets,
            )
    failpoints.reach(ctx.step, "after_manifest")
    started = time.monotonic()
    result = _retrying(ctx, kubernetes.uninstall_release, api, cfg.namespace, cfg.release)
    data = {"kind": "helm", **asdict(result), "elapsed_s": round(time.monotonic() - started, 3)}
    ctx.record("stack.stopped", data)
    return data


def isolation_present(ctx: StepContext) -> bool:
    from tasks.kubernetes import isolation_policy_name
    from tasks.kubernetes_calls import k8s_call

    cfg = config(ctx)
    name = isolation_policy_name(cfg.release)
    net = client.NetworkingV1Api(ctx.clients.kubernetes)
    found = _retrying(
        ctx,
        k8s_call,
        ctx.step,
        "get",
        "NetworkPolicy",
        name,
        cfg.namespace,
        net.read_namespaced_network_policy,
        name,
        cfg.namespace,
        missing_ok=True,
    )
    return found is not None


def remaining(ctx: StepContext) -> list[str]:
    """Everything of the release still in the cluster (``Kind/name``): the manifest's
    resources, any non-hook object labelled with the release, and its release Secrets.
    Hook resources and the setup-written credential Secrets are left by ``helm
    uninstall`` by design and are not listed. Read-only."""
    from tasks import kubernetes
    from tasks.kubernetes_helm import parse_manifest

    cfg = config(ctx)
    ns, api = cfg.namespace, ctx.clients.kubernetes
    helm, _ = _retrying(ctx, kubernetes.read_release, api, ns, cfg.release, ctx.step)
    manifest = parse_manifest(helm.manifest) if helm else []
    left = _retrying(ctx, kubernetes.release_leftovers, api, ns, cfg.release, manifest, op=ctx.step)
    return left.remaining


# ------------------------------------------------------------------ stop_stack plan


def _plan_source(ctx: StepContext) -> tuple[list[Any], list[str], int | None]:
    """(manifest resources, release Secret names, revision) for a plan: from this
    incident's stored manifest when an earlier attempt already stored it (the release
    may be half gone by now; the plan must not change), else read from the cluster."""
    from tasks import kubernetes
    from tasks.kubernetes_helm import parse_manifest

    cfg = config(ctx)
    rec = _stored_manifest(ctx)
    if rec is not None:
        text = ctx.trail.read_artifact(rec.data["sha256"]).decode("utf-8", errors="replace")
        return (
            parse_manifest(text),
            list(rec.data.get("release_secrets", [])),
            rec.data.get("revision"),
        )
    helm, secrets = _retrying(
        ctx, kubernetes.read_release, ctx.clients.kubernetes, cfg.namespace, cfg.release, ctx.step
    )
    if helm is None:
        return [], secrets, None
    return parse_manifest(helm.manifest), secrets, helm.version


def stop_plan(ctx: StepContext) -> dict[str, Any]:
    """What ``stop_stack`` will do on a Helm target, read-only: ``summary``,
    ``resources`` and every mutating call in order (``api_calls``), each as
    ``METHOD path`` (``*`` where a name is only known at run time) plus a note."""
    from tasks.kubernetes import isolation_policy_name
    from tasks.kubernetes_helm import UNINSTALL_ORDER, uninstall_sorted

    cfg = config(ctx)
    ns, rel = cfg.namespace, cfg.release
    manifest, secrets, revision = _plan_source(ctx)
    policy = isolation_policy_name(rel)
    calls = [
        f"POST {api_path('NetworkPolicy', ns)} (create {policy}: deny all ingress and egress "
        f"of pods labelled {INSTANCE_LABEL}={rel})",
        f"PUT {api_path('NetworkPolicy', ns, policy)} (only if an existing {policy} was loosened)",
    ]
    pods_call = (
        f"DELETE {api_path('Pod', ns, '*')} (every pod labelled {INSTANCE_LABEL}={rel}, "
        "gracePeriodSeconds=0)"
    )
    pod_slot = UNINSTALL_ORDER.index("Pod")
    pods_listed = False
    for res in uninstall_sorted(manifest):
        if res.keep:
            continue
        if not pods_listed and UNINSTALL_ORDER.index(res.kind) > pod_slot:
            calls.append(pods_call)
            pods_listed = True
        if res.kind not in KIND_PATHS:
            raise StepFailed(
                ctx.step,
                f'release "{rel}" in namespace "{ns}": manifest has kind {res.kind} '
                f"({res.name}) that this engine cannot delete",
            )
        calls.append(
            f"DELETE {api_path(res.kind, res.namespace or ns, res.name)} (propagationPolicy="
            f"{'Background' if res.kind != 'Pod' else 'gracePeriodSeconds=0'})"
        )
    if not pods_listed:
        calls.append(pods_call)
    calls += [f"DELETE {api_path('Secret', ns, s)} (Helm release record)" for s in secrets]
    calls.append(
        f"DELETE {api_path('NetworkPolicy', ns, policy)} (isolation lifted once nothing of the "
        "release runs)"
    )
    kept = [r.ref for r in manifest if r.keep]
    resources = [
        f"helm-release:{ns}/{rel}" + (f"@v{revision}" if revision else ""),
        *[r.ref for r in uninstall_sorted(manifest) if not r.keep],
        *[f"Secret/{s}" for s in secrets],
    ]
    summary = (
        f"isolate, capture, then uninstall Helm release {rel!r} in namespace {ns!r}"
        + (f" (revision {revision})" if revision else " (no release record found)")
        + f": {len(manifest) - len(kept)} resource(s), every pod with grace period 0, "
        f"{len(secrets)} release Secret(s); hooks not run"
        + (f"; kept by resource-policy: {', '.join(kept)}" if kept else "")
    )
    return {"summary": summary, "resources": resources, "api_calls": calls}


def matches_plan(call: str, planned: list[str]) -> bool:
    """Whether ``METHOD path`` is one of the planned calls (``*`` matches a name)."""
    return any(fnmatch.fnmatchcase(call, p.split(" (")[0]) for p in planned)


def stopped_reason(ctx: StepContext) -> str | None:
    """``stop_stack``'s check on Helm: a reason when nothing of the release is left and
    the isolation policy is gone too (a finished earlier attempt), else None.

    Raises:
        StepFailed: no trace of the release at all and this incident never uninstalled
            it — the release or namespace in the inventory is wrong (a 404 for the whole
            release); succeeding here would report a containment that never happened.
    """
    cfg = config(ctx)
    if remaining(ctx) or isolation_present(ctx):
        return None
    if ctx.params.get("absent_ok"):
        # Teardown of a retired target: a release already gone is the goal, not a typo.
        return f'Helm release "{cfg.release}" is already absent from namespace "{cfg.namespace}"'
    if _stored_manifest(ctx) is None and not any(
        r.kind == "stack.stopped" for r in ctx.trail.records()
    ):
        raise StepFailed(
            ctx.step,
            f'Helm release "{cfg.release}" not found in namespace "{cfg.namespace}" (404): no '
            f"Secret sh.helm.release.v1.{cfg.release}.v<N> and no resource labelled "
            f"{INSTANCE_LABEL}={cfg.release}; check the target's helm.release and helm.namespace",
        )
    return f'nothing of Helm release "{cfg.release}" is left in namespace "{cfg.namespace}"'


# ------------------------------------------------------------------ teardown / rotation


def remove_credentials(ctx: StepContext) -> dict[str, Any]:
    """Teardown: deletes the Secrets ``<release>``, ``<release>-token``,
    ``<release>-cert`` and the leftover setup hook Job (absent is fine), verified gone;
    recorded as ``credentials.removed``."""
    from tasks import kubernetes

    cfg = config(ctx)
    res = _retrying(
        ctx, kubernetes.remove_credentials, ctx.clients.kubernetes, cfg.namespace, cfg.release
    )
    data = {"namespace": cfg.namespace, "deleted": res.deleted, "absent": res.absent}
    ctx.record("credentials.removed", data)
    return data


def write_credentials(
    ctx: StepContext,
    *,
    token: str,
    ca_crt: str,
    tls_crt: str,
    tls_key: str,
    tunnel_id: str,
    domain: str,
    ca_key: str | None = None,
) -> dict[str, Any]:
    """Rotation: writes the new token and certificates into the release's credential
    Secrets and restarts the Deployment, verified by new ready pods. Only fingerprints
    are recorded (``credentials.written``); the values are registered with the redactor
    first, so no error or log line can carry them. ``ca_key`` (optional) is also
    written, as key ``ca.key`` of the Secret ``<release>`` (where the rotation drill
    reads the current CA key from).

    Raises:
        ConfigError: an input is empty or malformed (the field is named, never the value).
    """
    from tasks import kubernetes

    for value in (token, tls_key, ca_crt, tls_crt, ca_key):
        if value:
            ctx.redactor.add(value)
    cfg = config(ctx)
    res = _retrying(
        ctx,
        kubernetes.write_credentials,
        ctx.clients.kubernetes,
        cfg.namespace,
        cfg.release,
        token=token,
        ca_crt=ca_crt,
        tls_crt=tls_crt,
        tls_key=tls_key,
        tunnel_id=tunnel_id,
        domain=domain,
        deployment=cfg.deployment,
        timeout_s=min(ctx.timeout_s, 120.0),
        ca_key=ca_key,
    )
    data = {
        "namespace": cfg.namespace,
        "secrets_written": res.secrets_written,
        "fingerprints": res.fingerprints,
        "restarted": res.restarted,
        "pod_template_hash": res.pod_template_hash,
        "ready_pods": res.ready_pods,
    }
    ctx.record("credentials.written", data)
    return data


# ------------------------------------------------------------------ restore


def _creators(api: client.ApiClient) -> dict[str, Callable[..., Any]]:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    batch, net = client.BatchV1Api(api), client.NetworkingV1Api(api)
    rbac, policy = client.RbacAuthorizationV1Api(api), client.PolicyV1Api(api)
    return {
        "NetworkPolicy": net.create_namespaced_network_policy,
        "PodDisruptionBudget": policy.create_namespaced_pod_disruption_budget,
        "ServiceAccount": core.create_namespaced_service_account,
        "ConfigMap": core.create_namespaced_config_map,
        "PersistentVolumeClaim": core.create_namespaced_persistent_volume_claim,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
        "Service": core.create_namespaced_service,
        "DaemonSet": apps.create_namespaced_daemon_set,
        "ReplicaSet": apps.create_namespaced_replica_set,
        "Deployment": apps.create_namespaced_deployment,
        "HorizontalPodAutoscaler": client.AutoscalingV2Api(
            api
        ).create_namespaced_horizontal_pod_autoscaler,
        "StatefulSet": apps.create_namespaced_stateful_set,
        "Job": batch.create_namespaced_job,
        "CronJob": batch.create_namespaced_cron_job,
        "Ingress": net.create_namespaced_ingress,
    }


def _install_body(doc: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """The object as ``helm install`` would submit it: Helm's ownership annotations
    (so a later ``helm upgrade --install`` can adopt it), no server-set fields."""
    body = copy.deepcopy(doc)
    meta = body.setdefault("metadata", {})
    for transient in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        meta.pop(transient, None)
    body.pop("status", None)
    meta["namespace"] = namespace
    meta.setdefault("annotations", {}).update(
        {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}
    )
    return body


def restore(ctx: StepContext) -> dict[str, Any]:
    """Re-creates the release's resources from the manifest ``uninstall`` stored in this
    incident's trail, through the API, in Helm's install order, then waits for the
    Deployment's pods to be Ready. Lifts the isolation policy first (it would blackhole
    the new pods). Idempotent: objects that already exist are left as they are.

    This is the ``helm install``-less restore. It does NOT: write a Helm release Secret
    (``helm list`` will not show the release until the next ``helm upgrade --install``
    adopts these objects through their ``meta.helm.sh`` annotations); run hooks (the
    setup Job — the credential Secrets must already hold the rotated values, written by
    :func:`write_credentials`); re-create Secrets that were in the manifest (their
    values were never stored; rotation writes new ones); re-render values (the stored
    manifest is applied as it was); create cluster-scoped objects or kinds outside
    :data:`INSTALL_ORDER` (checked before anything is created).

    Raises:
        StepFailed: no manifest stored in this incident, an unsupported kind, RBAC/4xx
            answers (naming the resource), or pods not ready in time.
    """
    from tasks import kubernetes
    from tasks.kubernetes_calls import k8s_call

    cfg = config(ctx)
    api, ns = ctx.clients.kubernetes, cfg.namespace
    rec = _stored_manifest(ctx)
    if rec is None:
        raise StepFailed(
            ctx.step,
            f'no stored manifest of Helm release "{cfg.release}" in this incident: nothing '
            "to restore from (stop_stack stores it before uninstalling)",
        )
    text = ctx.trail.read_artifact(rec.data["sha256"])
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
    creators = _creators(api)
    unsupported = sorted({d["kind"] for d in docs if d["kind"] not in creators} - {"Secret"})
    if unsupported:
        raise StepFailed(
            ctx.step,
            f"stored manifest of {cfg.release} has kinds restore cannot create: "
            f"{', '.join(unsupported)}; nothing was created",
        )
    lifted = _retrying(ctx, kubernetes.remove_isolation, api, ns, cfg.release)
    order = {k: i for i, k in enumerate(INSTALL_ORDER)}
    created: list[str] = []
    existing: list[str] = []
    skipped: list[str] = []
    for doc in sorted(docs, key=lambda d: order.get(d["kind"], len(order))):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Secret":
            skipped.append(f"{kind}/{name}")
            continue
        body = _install_body(doc, cfg.release, ns)
        done = _retrying(
            ctx,
            k8s_call,
            ctx.step,
            "create",
            kind,
            name,
            ns,
            creators[kind],
            ns,
            body,
            exists_ok=True,
        )
        (created if done is not None else existing).append(f"{kind}/{name}")
        ctx.record("k8s.created" if done is not None else "k8s.exists", {"ref": f"{kind}/{name}"})
    data: dict[str, Any] = {
        "namespace": ns,
        "revision": rec.data.get("revision"),
        "isolation_lifted": lifted,
        "created": created,
        "existing": existing,
        "skipped_secrets": skipped,
    }
    if any(d["kind"] == "Deployment" and d["metadata"]["name"] == cfg.deployment for d in docs):
        phash, ready = _retrying(
            ctx,
            kubernetes.wait_ready,
            api,
            ns,
            cfg.deployment,
            timeout_s=min(ctx.timeout_s, 120.0),
        )
        data.update(pod_template_hash=phash, ready_pods=ready)
    ctx.record("stack.restored", data)
    return data
