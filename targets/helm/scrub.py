"""Secret hygiene of what the Helm driver stores: manifests and object YAML with every
Secret value and every env literal replaced by its fingerprint."""

from __future__ import annotations

import re
from typing import Any

import yaml

from core.redact import fingerprint, scrub_env


def _scrub_env(node: Any) -> Any:
    """Every literal env value anywhere in an object (pod specs, templates) becomes its
    fingerprint, whatever the variable's name; ``valueFrom`` references stay."""
    return scrub_env(node)


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
