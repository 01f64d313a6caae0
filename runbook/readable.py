"""Readable copies of the artifacts a person must read.

Artifacts are stored by their SHA-256 (``artifacts/<sha256>``), which proves what
they are but tells nobody which file to open. The ones a responder reads — the
vendor-support report, the log review's findings and timeline, the blocklist for
Messages API callers — are also written beside the trail under their own names
(``evidence/<incident>/readable/<name>``), and their paths are printed. The copies are
outside the hash chain: ``mcp-ir verify`` checks the originals, and each copy is
rewritten from its original when it differs.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.trail import Trail

# subject prefix -> what a person calls it
READABLE = {
    "support-report": "support report",
    "log-review:markdown": "log review",
    "log-review:findings": "findings",
    "log-review:timeline": "timeline",
    "blocklist": "blocklist",
}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export(trail: Trail) -> list[tuple[str, Path]]:
    """Writes (or refreshes) the readable copies; returns ``(label, path)`` pairs in
    trail order, the latest artifact of each subject winning."""
    latest: dict[str, tuple[str, str]] = {}
    for rec in trail.records():
        if rec.kind != "artifact":
            continue
        subject = str(rec.data.get("subject") or "")
        if subject in READABLE and rec.data.get("sha256"):
            name = _SAFE.sub("-", str(rec.data.get("name") or subject)).strip("-") or subject
            latest[subject] = (name, rec.data["sha256"])
    out = []
    folder = trail.dir / "readable"
    for subject, (name, digest) in latest.items():
        folder.mkdir(exist_ok=True)
        path = folder / name
        try:
            content = trail.read_artifact(digest)
        except OSError:
            continue
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
        out.append((READABLE[subject], path))
    return out
