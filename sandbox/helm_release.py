"""Seeds the sandbox cluster with an INSTALLED Helm 3 release of the mcp-tunnel chart.

What ``helm install`` + ``helm upgrade`` + the chart's setup hook leave in a cluster
(FACTS §1):

- the manifest's resources (ServiceAccount, ConfigMap, Service, NetworkPolicy, Deployment
  ``mcp-tunnel`` with containers ``mcp-proxy`` and ``cloudflared``, CronJob
  ``mcp-tunnel-cert-renew``), the Deployment's ReplicaSet and pods;
- the hook Job ``mcp-tunnel-setup`` (in the release JSON's ``hooks``, not in ``manifest``);
- the Secret ``mcp-tunnel`` written by setup (not in the manifest, so ``helm uninstall``
  leaves it), optionally the manual-flow Secrets ``mcp-tunnel-token``/``mcp-tunnel-cert``;
- one release Secret per revision, ``sh.helm.release.v1.mcp-tunnel.v<N>``, type
  ``helm.sh/release.v1``, labels ``owner=helm,name,status,version``, whose
  ``data.release`` is base64(gzip(JSON)) as Helm's storage driver writes it — and which
  the API base64-encodes again like any Secret data.

Plus unrelated resources in the same namespace that a teardown must not touch.
"""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from sandbox.k8s_cluster import Cluster
from sandbox.k8s_store import RESOURCES

CHART = "mcp-tunnel"
CHART_VERSION = "0.3.0"
APP_VERSION = "1.4.2"
IMAGE = f"ghcr.io/anthropics/mcp-tunnel-proxy:{APP_VERSION}"


def helm_storage_encode(release: dict, *, compress: bool = True) -> str:
    """Helm 3's storage encoding (pkg/storage/driver/util.go ``encodeRelease``):
    JSON → gzip (best compression) → base64. ``compress=False`` gives the payload of
    old releases that were stored uncompressed."""
    raw = json.dumps(release, separators=(",", ":")).encode()
    if compress:
        gz = bytearray(gzip.compress(raw, compresslevel=9, mtime=0))
        gz[9] = 0xFF  # OS byte: Go's gzip.Writer writes 255 (unknown); Python writes 3
        raw = bytes(gz)
    return base64.b64encode(raw).decode()


def _labels(release: str, component: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": CHART,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/version": APP_VERSION,
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": f"{CHART}-{CHART_VERSION}",
    }
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def _annotations(release: str, namespace: str) -> dict[str, str]:
    return {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}


def _pod_template(release: str, tunnel_secret: str) -> dict:
    selector = {"app.kubernetes.io/name": CHART, "app.kubernetes.io/instance": release}
    return {
        "metadata": {"labels": {**selector, "app.kubernetes.io/component": "proxy"}},
        "spec": {
            "serviceAccountName": release,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {"runAsUser": 65532, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "mcp-proxy",
                    "image": IMAGE,
                    "args": ["--config", "/etc/mcp-gateway/config.yaml"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/mcp-gateway"},
                        {"name": "tls", "mountPath": "/data", "readOnly": True},
                    ],
                    "readinessProbe": {"tcpSocket": {"port": 8080}},
                },
                {
                    "name": "cloudflared",
                    "image": "cloudflare/cloudflared:2026.10.0",
                    "args": ["tunnel", "--no-autoupdate", "run", "--url", "http://localhost:8080"],
                    "env": [
                        {
                            "name": "TUNNEL_TOKEN",
                            "valueFrom": {
                                "secretKeyRef": {"name": tunnel_secret, "key": "tunnel-token"}
                            },
                        }
                    ],
                },
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": f"{release}-config"}},
                {"name": "tls", "secret": {"secretName": tunnel_secret}},
            ],
        },
    }


def chart_manifest(release: str, namespace: str, *, revision: int) -> list[tuple[str, dict]]:
    """(template path, object) pairs of the rendered chart. Revision 1 predates the cert
    renewal CronJob and still had a legacy routes ConfigMap, so a decoder that reads the
    wrong revision deletes the wrong things."""
    lab = _labels(release)
    meta = lambda name, **extra: {  # noqa: E731
        "name": name,
        "namespace": namespace,
        "labels": {**lab, **extra},
    }
    docs: list[tuple[str, dict]] = [
        (
            "serviceaccount.yaml",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(release)},
        ),
        (
            "configmap.yaml",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(f"{release}-config"),
                "data": {
                    "config.yaml": textwrap.dedent("""\
                listen: ":8080"
                tls:
                  cert_file: /data/tls.crt
                  key_file: /data/tls.key
                  client_ca_file: /data/ca.crt
                routes:
                  - host: github.mcp.internal
                    upstream: http://github-mcp.tools.svc:8000
                  - host: jira.mcp.internal
                    upstream: http://jira-mcp.tools.svc:8000
                """)
                },
            },
        ),
        (
            "service.yaml",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta(release),
                "spec": {
                    "type": "ClusterIP",
                    "selector": {
                        "app.kubernetes.io/name": CHART,
                        "app.kubernetes.io/instance": release,
                    },
                    "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
                },
            },
        ),
        (
            "networkpolicy.yaml",
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta(release),
                "spec": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/instance": release}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {}}]}],
                },
            },
        ),
        (
            "deployment.yaml",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta(release),
                "spec": {
                    "replicas": 2,
                    "revisionHistoryLimit": 10,
                    "selector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": CHART,
                            "app.kubernetes.io/instance": release,
                        }
                    },
                    "template": _pod_template(release, release),
                },
            },
        ),
    ]
    if revision >= 2:
        docs.append(
            (
                "cronjob-cert-renew.yaml",
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "metadata": meta(
                        f"{release}-cert-renew", **{"app.kubernetes.io/component": "cert-renew"}
                    ),
                    "spec": {
                        "schedule": "17 3 * * *",
                        "concurrencyPolicy": "Forbid",
                        "jobTemplate": {
                            "spec": {
                                "template": {
                                    "spec": {
                                        "serviceAccountName": release,
                                        "restartPolicy": "OnFailure",
                                        "containers": [
                                            {
                                                "name": "renew",
                                                "image": IMAGE,
                                                "args": ["setup", "renew-cert"],
                                            }
                                        ],
                                    }
                                }
                            }
                        },
                    },
                },
            )
        )
    else:
        docs.append(
            (
                "configmap-routes.yaml",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": meta(f"{release}-legacy-routes"),
                    "data": {"routes.yaml": "[]\n"},
                },
            )
        )
    return [(f"{CHART}/templates/{path}", obj) for path, obj in docs]


def render_manifest(docs: list[tuple[str, dict]]) -> str:
    """The release's ``manifest`` field as Helm writes it: ``---\\n# Source: <path>\\n``
    before each document."""
    return "".join(
        f"---\n# Source: {path}\n{yaml.safe_dump(obj, sort_keys=False)}" for path, obj in docs
    )


def _setup_job(release: str, namespace: str) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{release}-setup",
            "namespace": namespace,
            "labels": {**_labels(release, "setup")},
            "annotations": {
                "helm.sh/hook": "post-install,post-upgrade",
                "helm.sh/hook-weight": "0",
                "helm.sh/hook-delete-policy": "before-hook-creation",
            },
        },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": _labels(release, "setup")},
                "spec": {
                    "serviceAccountName": release,
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "setup",
                            "image": IMAGE,
                            "args": ["setup", "--secret", release],
                        }
                    ],
                },
            },
        },
    }


def _release_json(
    release: str,
    namespace: str,
    revision: int,
    status: str,
    deployed_at: datetime,
    docs: list[tuple[str, dict]],
) -> dict:
    ts = deployed_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    hook = _setup_job(release, namespace)
    return {
        "name": release,
        "info": {
            "first_deployed": ts
            if revision == 1
            else (deployed_at - timedelta(days=30)).isoformat().replace("+00:00", "Z"),
            "last_deployed": ts,
            "deleted": "",
            "description": "Install complete" if revision == 1 else "Upgrade complete",
            "status": status,
            "notes": "mcp-tunnel is running. Check `kubectl logs deploy/mcp-tunnel -c "
            "cloudflared` for 4 registered connections.",
        },
        "chart": {
            "metadata": {
                "name": CHART,
                "version": CHART_VERSION,
                "appVersion": APP_VERSION,
                "apiVersion": "v2",
                "description": "MCP tunnel proxy + cloudflared",
                "type": "application",
            },
            "lock": None,
            "templates": [],
            "values": {"replicaCount": 2, "tunnel": {"tokenVersion": revision}},
            "schema": None,
            "files": [],
        },
        "config": {"tunnel": {"tokenVersion": revision}},
        "manifest": render_manifest(docs),
        "hooks": [
            {
                "name": hook["metadata"]["name"],
                "kind": "Job",
                "path": f"{CHART}/templates/setup-job.yaml",
                "manifest": yaml.safe_dump(hook, sort_keys=False),
                "events": ["post-install", "post-upgrade"],
                "last_run": {"started_at": ts, "completed_at": ts, "phase": "Succeeded"},
                "weight": 0,
                "delete_policies": ["before-hook-creation"],
            }
        ],
        "version": revision,
        "namespace": namespace,
    }


@dataclass
class SeededRelease:
    """What was seeded; credential values are for assertions in tests only."""

    namespace: str
    release: str
    revision: int
    manifest_objects: list[tuple[str, str]]  # (kind, name) of the deployed revision
    credentials: dict[str, str]
    pods: list[str]
    unrelated: list[tuple[str, str]] = field(default_factory=list)
    release_secrets: list[str] = field(default_factory=list)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def seed_release(
    cluster: Cluster,
    *,
    namespace: str = "mcp-tunnel",
    release: str = "mcp-tunnel",
    compress: bool = True,
    manual_secrets: bool = True,
    canary: str | None = None,
    restart_container: str | None = "cloudflared",
) -> SeededRelease:
    """Seeds an installed release (revision 1 superseded, revision 2 deployed).

    Args:
        cluster: the sandbox cluster to seed (in process).
        compress: gzip the release payload (Helm 3 default); False seeds an old-style
            uncompressed payload.
        manual_secrets: also create ``<release>-token`` and ``<release>-cert``.
        canary: a secret value cloudflared's debug log leaks in a request header.
        restart_container: a container of the first pod that crashed once (has
            ``previous`` logs).
    """
    res = {r.kind: r for r in RESOURCES.values()}
    tunnel_id = f"tnl_{uuid.uuid4().hex[:24]}"
    domain = f"{secrets.token_hex(4)}.tunnels.example.com"
    creds = {
        "tunnel-id": tunnel_id,
        "tunnel-domain": domain,
        "tunnel-token": "tnltok_" + secrets.token_urlsafe(32),
        "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIBsandboxCA\n-----END CERTIFICATE-----\n",
        "tls.crt": "-----BEGIN CERTIFICATE-----\nMIIBsandboxTLS\n-----END CERTIFICATE-----\n",
        "tls.key": "-----BEGIN PRIVATE KEY-----\n"
        + secrets.token_hex(24)
        + "\n-----END PRIVATE KEY-----\n",
    }
    cluster.log_templates = _log_templates(tunnel_id, domain, canary)
    now = datetime.now(UTC)
    # Setup hook's output: the credentials Secret (labelled by the setup binary, not Helm).
    cluster.create(
        res["Secret"],
        namespace,
        {
            "metadata": {
                "name": release,
                "labels": {"app.kubernetes.io/created-by": "mcp-tunnel-setup"},
            },
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in creds.items()},
        },
    )
    if manual_secrets:
        cluster.create(
            res["Secret"],
            namespace,
            {
                "metadata": {"name": f"{release}-token"},
                "type": "Opaque",
                "data": {"tunnel-token": _b64(creds["tunnel-token"])},
            },
        )
        cluster.create(
            res["Secret"],
            namespace,
            {
                "metadata": {"name": f"{release}-cert"},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": _b64(creds["tls.crt"]), "tls.key": _b64(creds["tls.key"])},
            },
        )
    deployed = chart_manifest(release, namespace, revision=2)
    for _, obj in deployed:
        body = json.loads(json.dumps(obj))
        body["metadata"]["annotations"] = _annotations(release, namespace)
        cluster.create(res[obj["kind"]], namespace, body)
    job = _setup_job(release, namespace)
    job["status"] = {
        "succeeded": 1,
        "startTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "completionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    cluster.create(res["Job"], namespace, job)
    release_secrets = []
    for revision, status in ((1, "superseded"), (2, "deployed")):
        docs = chart_manifest(release, namespace, revision=revision)
        payload = helm_storage_encode(
            _release_json(
                release, namespace, revision, status, now - timedelta(days=2 - revision), docs
            ),
            compress=compress,
        )
        name = f"sh.helm.release.v1.{release}.v{revision}"
        cluster.create(
            res["Secret"],
            namespace,
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "owner": "helm",
                        "name": release,
                        "status": status,
                        "version": str(revision),
                        "modifiedAt": str(int(now.timestamp())),
                    },
                },
                "type": "helm.sh/release.v1",
                # The API stores Secret data as bytes and serialises them as base64: Helm's
                # already-base64 payload is therefore base64-encoded a second time.
                "data": {"release": _b64(payload)},
            },
        )
        release_secrets.append(name)
    _seed_unrelated(cluster, namespace)
    pods = _wait_pods(cluster, namespace, release)
    if restart_container:
        cluster.restart_container(
            namespace,
            pods[0],
            restart_container,
            [
                "2026-11-21T20:50:02Z INF Starting tunnel tunnelID=" + tunnel_id,
                *[_registered(i) for i in range(4)],
            ],
        )
    return SeededRelease(
        namespace=namespace,
        release=release,
        revision=2,
        manifest_objects=[(o["kind"], o["metadata"]["name"]) for _, o in deployed],
        credentials=creds,
        pods=pods,
        unrelated=[
            ("Deployment", "billing-api"),
            ("Secret", "billing-db"),
            ("ConfigMap", "billing-config"),
            ("Secret", "sh.helm.release.v1.billing.v1"),
        ],
        release_secrets=release_secrets,
    )


def _registered(i: int) -> str:
    ips = ["198.41.192.7", "198.41.200.13", "198.41.192.47", "198.41.200.53"]
    locs = ["fra08", "ams01", "fra12", "ams06"]
    return (
        f"2026-11-21T20:40:0{i + 1}Z INF Registered tunnel connection connIndex={i} "
        f"connection={uuid.uuid4()} event=0 ip={ips[i]} location={locs[i]} protocol=quic"
    )


def _log_templates(tunnel_id: str, domain: str, canary: str | None) -> dict[str, list[str]]:
    cloudflared = [
        "2026-11-21T20:40:00Z INF Starting tunnel tunnelID=" + tunnel_id,
        "2026-11-21T20:40:00Z INF Version 2026.10.0 (Checksum 5f1c0e)",
        "2026-11-21T20:40:00Z WRN No ingress rules were defined in provided config (if any) "
        "nor from the cli, cloudflared will return 503 for all incoming HTTP requests",
        *[_registered(i) for i in range(4)],
        f"2026-11-21T20:44:17Z DBG GET https://github.{domain}/mcp event=1 "
        "ip=203.0.113.50 type=http",
    ]
    if canary:
        cloudflared.append(
            f"2026-11-21T20:44:17Z DBG request headers "
            f"map[Authorization:[Bearer {canary}] User-Agent:[mcp-client/1.0]]"
        )
    proxy = [
        '{"level":"info","msg":"route configured","host":"github.mcp.internal",'
        '"upstream":"http://github-mcp.tools.svc:8000"}',
        '{"level":"info","msg":"route configured","host":"jira.mcp.internal",'
        '"upstream":"http://jira-mcp.tools.svc:8000"}',
        '{"level":"warn","msg":"no route for host","host":"metadata.google.internal"}',
        '{"level":"warn","msg":"IP validation failed: 203.0.113.50 is not a private address"}',
        '{"level":"error","msg":"tls handshake failed","remote":"203.0.113.50:51522"}',
    ]
    return {
        "cloudflared": cloudflared,
        "mcp-proxy": proxy,
        "api": ['{"level":"info","msg":"billing api listening on :9000"}'],
    }


def _seed_unrelated(cluster: Cluster, namespace: str) -> None:
    res = {r.kind: r for r in RESOURCES.values()}
    labels = {"app.kubernetes.io/name": "billing-api", "app.kubernetes.io/instance": "billing"}
    cluster.create(
        res["ConfigMap"],
        namespace,
        {"metadata": {"name": "billing-config", "labels": labels}, "data": {"port": "9000"}},
    )
    cluster.create(
        res["Secret"],
        namespace,
        {
            "metadata": {"name": "billing-db", "labels": labels},
            "data": {"password": _b64(secrets.token_hex(8))},
        },
    )
    cluster.create(
        res["Deployment"],
        namespace,
        {
            "metadata": {"name": "billing-api", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {"name": "api", "image": "registry.example.com/billing-api:3.1"}
                        ]
                    },
                },
            },
        },
    )
    cluster.create(
        res["Secret"],
        namespace,
        {
            "metadata": {
                "name": "sh.helm.release.v1.billing.v1",
                "labels": {
                    "owner": "helm",
                    "name": "billing",
                    "status": "deployed",
                    "version": "1",
                },
            },
            "type": "helm.sh/release.v1",
            "data": {
                "release": _b64(
                    helm_storage_encode(
                        {"name": "billing", "version": 1, "namespace": namespace, "manifest": ""}
                    )
                )
            },
        },
    )


def _wait_pods(cluster: Cluster, namespace: str, release: str) -> list[str]:
    """Lets the simulated kubelet start the release's pods; returns their names."""
    import time

    pod_res = RESOURCES[("", "pods")]
    deadline = time.monotonic() + 10
    while True:
        pods = cluster.list(pod_res, namespace, f"app.kubernetes.io/instance={release}")
        items: list[dict[str, Any]] = pods["items"]
        if items and all(p["status"]["phase"] == "Running" for p in items):
            return [p["metadata"]["name"] for p in items]
        if time.monotonic() > deadline:
            raise RuntimeError("sandbox pods did not start")
        time.sleep(0.05)


__all__ = ["SeededRelease", "chart_manifest", "helm_storage_encode", "seed_release"]
