"""Helm 3 release storage, read without the helm binary.

Helm keeps each revision in a Secret ``sh.helm.release.v1.<release>.v<N>`` (type
``helm.sh/release.v1``, labels ``owner=helm,name=<release>,status,version``). Its storage
driver writes ``data.release`` = base64(gzip(JSON)); the Kubernetes API base64-encodes
Secret data again. Reading through the API therefore means: base64 → base64 → gunzip
(only if the gzip magic ``1f 8b 08`` is there: old releases are plain JSON) → JSON.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from core.errors import OperationFailed

GZIP_MAGIC = b"\x1f\x8b\x08"
RELEASE_SECRET_TYPE = "helm.sh/release.v1"  # noqa: S105 - a type name

# helm/helm pkg/releaseutil/kind_sorter.go: UninstallOrder. Kinds not listed go last,
# sorted by kind; within a kind, by the manifest's source path (Helm's Manifest.Name).
UNINSTALL_ORDER: tuple[str, ...] = (
    "APIService",
    "Ingress",
    "Service",
    "CronJob",
    "Job",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "Pod",
    "DaemonSet",
    "RoleBindingList",
    "RoleBinding",
    "RoleList",
    "Role",
    "ClusterRoleBindingList",
    "ClusterRoleBinding",
    "ClusterRoleList",
    "ClusterRole",
    "CustomResourceDefinition",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "StorageClass",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "PodDisruptionBudget",
    "PodSecurityPolicy",
    "LimitRange",
    "ResourceQuota",
    "NetworkPolicy",
    "Namespace",
)

# helm/helm pkg/releaseutil/manifest.go: the document separator of a rendered manifest.
_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")
_SOURCE = re.compile(r"^# Source: (.+)$", re.M)


@dataclass(frozen=True)
class ManifestResource:
    """One document of a release manifest."""

    kind: str
    api_version: str
    name: str
    namespace: str | None
    source: str
    keep: bool = False  # annotated helm.sh/resource-policy: keep (helm uninstall skips it)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class HelmRelease:
    """The decoded fields of a stored release that an uninstall needs."""

    name: str
    namespace: str
    version: int
    status: str
    manifest: str
    hooks: list[dict[str, Any]] = field(default_factory=list)


def release_secret_name(release: str, version: int) -> str:
    return f"sh.helm.release.v1.{release}.v{version}"


def decode_release(api_data: str, *, secret_name: str = "release Secret") -> dict[str, Any]:  # noqa: S107
    """Decodes ``data.release`` of a release Secret as read through the API.

    Args:
        api_data: the value of ``secret.data["release"]`` as the API returns it
            (base64 of Helm's base64 payload).
        secret_name: named in errors.

    Raises:
        OperationFailed: the payload is not a Helm release (wrong encoding, bad gzip, bad JSON).
    """
    try:
        helm_payload = base64.b64decode(api_data, validate=True)  # the API's encoding
        raw = base64.b64decode(helm_payload, validate=True)  # Helm's storage encoding
    except (binascii.Error, ValueError):
        raise OperationFailed(
            "helm_release",
            f"{secret_name}: data.release is not base64(base64(...)) as Helm 3 stores it",
        ) from None
    if raw[:3] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise OperationFailed("helm_release", f"{secret_name}: corrupt gzip payload") from None
    try:
        release = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise OperationFailed(
            "helm_release", f"{secret_name}: payload is not release JSON"
        ) from None
    if not isinstance(release, dict) or "manifest" not in release:
        raise OperationFailed("helm_release", f"{secret_name}: release JSON has no manifest field")
    return release


def to_release(data: dict[str, Any]) -> HelmRelease:
    info = data.get("info") or {}
    return HelmRelease(
        name=str(data.get("name", "")),
        namespace=str(data.get("namespace", "")),
        version=int(data.get("version", 0)),
        status=str(info.get("status", "")),
        manifest=str(data.get("manifest") or ""),
        hooks=list(data.get("hooks") or []),
    )


def parse_manifest(manifest: str) -> list[ManifestResource]:
    """Splits a rendered manifest into its resources (empty documents skipped).

    Raises:
        OperationFailed: a document is not valid YAML or lacks kind/metadata.name.
    """
    out: list[ManifestResource] = []
    for index, chunk in enumerate(_SEPARATOR.split(manifest)):
        if not chunk.strip():
            continue
        source_match = _SOURCE.search(chunk)
        source = source_match.group(1).strip() if source_match else f"manifest-{index}"
        try:
            doc = yaml.safe_load(chunk)
        except yaml.YAMLError:
            raise OperationFailed(
                "helm_release", f"manifest document {source}: invalid YAML"
            ) from None
        if doc is None:
            continue
        if (
            not isinstance(doc, dict)
            or not doc.get("kind")
            or not (doc.get("metadata") or {}).get("name")
        ):
            raise OperationFailed(
                "helm_release", f"manifest document {source}: missing kind or metadata.name"
            )
        annotations = doc["metadata"].get("annotations") or {}
        out.append(
            ManifestResource(
                kind=str(doc["kind"]),
                api_version=str(doc.get("apiVersion", "")),
                name=str(doc["metadata"]["name"]),
                namespace=doc["metadata"].get("namespace"),
                source=source,
                keep=annotations.get("helm.sh/resource-policy") == "keep",
            )
        )
    return out


def uninstall_sorted(resources: list[ManifestResource]) -> list[ManifestResource]:
    """Resources in Helm's uninstall order (kind_sorter.go semantics)."""
    order = {kind: i for i, kind in enumerate(UNINSTALL_ORDER)}
    unknown = len(UNINSTALL_ORDER)

    def key(r: ManifestResource) -> tuple[int, str, str]:
        idx = order.get(r.kind, unknown)
        return (idx, r.kind if idx == unknown else "", r.source)

    return sorted(resources, key=key)
