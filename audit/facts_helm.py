"""Facts of a Helm target, read through the Kubernetes API (GET and LIST only):
the release's Deployment, the ConfigMap its proxy mounts at ``/etc/mcp-gateway``,
the NetworkPolicies that select its pods, its CronJobs, and the Secret holding the
server certificate and token (read for fingerprints and timestamps only)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import yaml
from kubernetes import client

from audit.facts import FactUnavailable, ImageRef, NetworkView, Sourced, StoredCredential, utc
from audit.network_rules import judge_egress_rule, networks
from core.errors import McpIrError
from tasks.kubernetes_calls import k8s_call

CONFIG_MOUNT = "/etc/mcp-gateway"
OP = "audit"


def _ts(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return utc(value)
    return utc(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions) selects ``labels``."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class HelmFacts:
    """Reads one Helm release of the mcp-tunnel chart."""

    kind = "helm"

    def __init__(self, api: client.ApiClient, helm: Any) -> None:
        self.api = api
        self.ns = helm.namespace
        self.release = helm.release
        self.deployment_name = helm.deployment
        self._dep: dict[str, Any] | None = None

    # -- reads ------------------------------------------------------------------
    def _call(self, verb: str, kind: str, name: str | None, fn: Any, *args: Any) -> Any:
        try:
            obj = k8s_call(OP, verb, kind, name, self.ns, fn, *args)
        except McpIrError as exc:
            raise FactUnavailable(exc.detail) from None
        return self.api.sanitize_for_serialization(obj)

    def deployment(self) -> dict[str, Any]:
        if self._dep is None:
            apps = client.AppsV1Api(self.api)
            self._dep = self._call(
                "get",
                "Deployment",
                self.deployment_name,
                apps.read_namespaced_deployment,
                self.deployment_name,
                self.ns,
            )
        return self._dep

    def _where(self, kind: str, name: str) -> str:
        return f"{kind} {self.ns}/{name}"

    def _pod_spec(self) -> dict[str, Any]:
        return self.deployment()["spec"]["template"]["spec"]

    def _secret(self, name: str) -> dict[str, Any]:
        core = client.CoreV1Api(self.api)
        return self._call("get", "Secret", name, core.read_namespaced_secret, name, self.ns)

    # -- TargetFacts ----------------------------------------------------------------
    def proxy_config(self) -> Sourced:
        spec = self._pod_spec()
        proxy = next((c for c in spec.get("containers", []) if c.get("name") == "mcp-proxy"), None)
        if proxy is None:
            raise FactUnavailable(
                f"{self._where('Deployment', self.deployment_name)} has no mcp-proxy container"
            )
        mount = next(
            (m for m in proxy.get("volumeMounts") or [] if m.get("mountPath") == CONFIG_MOUNT), None
        )
        volume = next(
            (v for v in spec.get("volumes") or [] if mount and v.get("name") == mount.get("name")),
            None,
        )
        if volume is None or not volume.get("configMap"):
            raise FactUnavailable(f"mcp-proxy mounts no ConfigMap at {CONFIG_MOUNT}")
        name = volume["configMap"]["name"]
        core = client.CoreV1Api(self.api)
        cm = self._call("get", "ConfigMap", name, core.read_namespaced_config_map, name, self.ns)
        text = (cm.get("data") or {}).get("config.yaml")
        where = f"{self._where('ConfigMap', name)} key config.yaml"
        if text is None:
            raise FactUnavailable(f"{where} is missing")
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FactUnavailable(f"{where} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise FactUnavailable(f"{where} is not a mapping")
        return Sourced(doc, where)

    def images(self) -> Sourced:
        refs: list[ImageRef] = []
        spec = self._pod_spec()
        where = self._where("Deployment", self.deployment_name)
        for group in ("initContainers", "containers"):
            for c in spec.get(group) or []:
                refs.append(ImageRef(f"{where} {group}[{c['name']}]", str(c.get("image", ""))))
        batch = client.BatchV1Api(self.api)
        jobs = self._call("list", "CronJob", None, batch.list_namespaced_cron_job, self.ns)
        for cj in jobs.get("items", []):
            labels = cj["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/instance") != self.release:
                continue
            pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            for c in pod.get("containers") or []:
                refs.append(
                    ImageRef(
                        f"{self._where('CronJob', cj['metadata']['name'])} containers[{c['name']}]",
                        str(c.get("image", "")),
                    )
                )
        return Sourced(refs, f"{where} and the release's CronJobs")

    def network(self, allowed_ips: list[str]) -> NetworkView:
        labels = self.deployment()["spec"]["template"]["metadata"].get("labels") or {}
        net = client.NetworkingV1Api(self.api)
        items = self._call(
            "list", "NetworkPolicy", None, net.list_namespaced_network_policy, self.ns
        ).get("items", [])
        selecting = [p for p in items if _selects(p["spec"].get("podSelector") or {}, labels)]
        source = f"NetworkPolicies in namespace {self.ns} selecting {labels}"
        observed, problems = [], []
        egress_policies = [p for p in selecting if "Egress" in (p["spec"].get("policyTypes") or [])]
        for p in selecting:
            observed.append(
                f"{p['metadata']['name']}: policyTypes={p['spec'].get('policyTypes')}, "
                f"egress rules={len(p['spec'].get('egress') or [])}"
            )
        if not selecting:
            problems.append("no NetworkPolicy selects the release's pods")
        elif not egress_policies:
            problems.append(
                "no NetworkPolicy limits egress (policyTypes lacks Egress): pods may reach anything"
            )
        upstream = networks(allowed_ips)
        # Policies add up: any allow rule of any selecting policy is reachable.
        for p in egress_policies:
            for i, rule in enumerate(p["spec"].get("egress") or []):
                for problem in judge_egress_rule(rule, upstream):
                    problems.append(f"{p['metadata']['name']} egress[{i}]: {problem}")
        return NetworkView(True, problems, observed, source)

    def policy_enforcement(self) -> Any:
        """Whether NetworkPolicies take effect here (``tasks.kubernetes_cni.Enforcement``):
        the CNI agents' DaemonSets, the policy plugins' CRDs and node annotations, read
        with LIST only. A read the audit's credentials may not make is evidence, not an
        error: the verdict is then ``unverifiable`` unless what was read suffices."""
        from tasks.kubernetes_cni import detect_enforcement

        return detect_enforcement(self.api, op=OP)

    def credentials(self) -> Sourced:
        spec = self._pod_spec()
        where = self._where("Deployment", self.deployment_name)
        found: list[StoredCredential] = []
        for c in spec.get("containers") or []:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    found.append(
                        StoredCredential(
                            f"{ref['name']}/{ref['key']}",
                            f"{where} containers[{c['name']}].env[{env['name']}]",
                            [
                                f"Secret {ref['name']} key {ref['key']} is passed as env var {env['name']}"
                            ],
                            "environment variable",
                        )
                    )
            for env_from in c.get("envFrom") or []:
                ref = env_from.get("secretRef")
                if ref:
                    found.append(
                        StoredCredential(
                            ref["name"],
                            f"{where} containers[{c['name']}].envFrom",
                            [f"every key of Secret {ref['name']} is passed as env vars"],
                            "environment variables",
                        )
                    )
        mounts = {
            m["name"]: (c["name"], m["mountPath"])
            for c in spec.get("containers") or []
            for m in c.get("volumeMounts") or []
        }
        for vol in spec.get("volumes") or []:
            secret = vol.get("secret")
            if secret:
                mode = secret.get("defaultMode")
                problems = []
                if mode is not None and int(mode) & 0o077:
                    problems.append(f"defaultMode {int(mode):04o} (want 0400 or 0440)")
                container, path = mounts.get(vol["name"], ("-", "not mounted"))
                found.append(
                    StoredCredential(
                        secret["secretName"],
                        f"{where} volumes[{vol['name']}]",
                        problems,
                        f"mounted as files at {path} in {container}",
                    )
                )
        if not found:
            raise FactUnavailable(f"{where} consumes no Secret (neither env nor volume)")
        return Sourced(found, where)

    def _tls_secret(self) -> str:
        for vol in self._pod_spec().get("volumes") or []:
            if vol.get("secret"):
                return str(vol["secret"]["secretName"])
        return self.release

    def server_certificate(self) -> Sourced:
        name = self._tls_secret()
        data = self._secret(name).get("data") or {}
        if "tls.crt" not in data:
            raise FactUnavailable(f"{self._where('Secret', name)} has no key tls.crt")
        return Sourced(
            base64.b64decode(data["tls.crt"]), f"{self._where('Secret', name)} key tls.crt"
        )

    def token_updated_at(self) -> Sourced:
        for name in (self.release, f"{self.release}-token"):
            try:
                secret = self._secret(name)
            except FactUnavailable:
                continue
            if "tunnel-token" not in (secret.get("data") or {}):
                continue
            meta = secret["metadata"]
            times = [_ts(f.get("time")) for f in meta.get("managedFields") or []]
            times = [t for t in times if t is not None] or [_ts(meta.get("creationTimestamp"))]
            when = max(t for t in times if t is not None)
            return Sourced(when, f"{self._where('Secret', name)} (last write, metadata)")
        raise FactUnavailable(
            f"no Secret {self.release} or {self.release}-token holds tunnel-token"
        )
