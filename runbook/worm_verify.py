"""Verifying the WORM copy in S3: the same checks as a local trail (chain,
checkpoints, signed decisions: :mod:`runbook.evidence_verify`) plus every
difference from the local copy. The WORM copy holds every checkpoint it was given,
so a local trail rolled back to an older checkpoint (its tail and later checkpoints
deleted) is caught here; and it says when the copy was uploaded late, after the run.

A locked object version cannot be changed or deleted, but a writer with
``s3:PutObject`` can still add a *new version* on top of it, or a delete marker
that hides it. Both show here: a key with more than one version is reported as
rewritten, a hidden one as missing, and the current versions are what the hash
chain is checked on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.trail import ARTIFACTS, VerifyResult, check_incident_id
from runbook.evidence_verify import EvidenceReport, verify_evidence
from runbook.worm import s3_client, trail_lines

_S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")
_RECORD_KEY = re.compile(r"^trail/(\d+)\.json$")
_CHECKPOINT_KEY = re.compile(r"^checkpoints/(\d+)-[0-9a-f]+\.json$")


@dataclass(frozen=True)
class RemoteLocation:
    bucket: str
    prefix: str
    incident_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.incident_id}" if self.prefix else self.incident_id


def parse_s3_url(url: str) -> RemoteLocation:
    """``s3://bucket/prefix/INCIDENT`` → its parts.

    Raises:
        ConfigError: not such a URL, or an invalid incident id.
    """
    match = _S3_URL.match(url.rstrip("/"))
    if not match:
        raise ConfigError(f"{url}: expected s3://BUCKET/PREFIX/INCIDENT")
    prefix, _, incident = match.group(2).rpartition("/")
    return RemoteLocation(match.group(1), prefix, check_incident_id(incident))


@dataclass
class RemoteReport:
    """The remote copy's own verification and its differences from the local one."""

    result: VerifyResult
    objects: int
    differences: list[str] = field(default_factory=list)
    compared_with: str = ""
    evidence: EvidenceReport | None = None
    late: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.result.ok
            and not self.differences
            and not (self.evidence is not None and self.evidence.problems)
        )

    def lines(self) -> list[str]:
        out = [f"remote: {self.result.line()} in {self.objects} objects"]
        if self.evidence is not None:
            out += [f"remote: {n}" for n in self.evidence.notes]
            out += [f"remote: FAILED: {p}" for p in self.evidence.problems if p not in out[0]]
        out += self.late
        if self.compared_with:
            if self.differences:
                out.append(f"differs from local copy {self.compared_with}:")
            else:
                out.append(f"identical to local copy {self.compared_with}")
        elif self.differences:
            out.append("problems:")
        out += [f"  {d}" for d in self.differences]
        return out


def _versions(client: Any, bucket: str, prefix: str) -> tuple[dict[str, int], set[str]]:
    """Per key: number of object versions; and the keys whose latest is a delete marker."""
    counts: dict[str, int] = {}
    hidden: set[str] = set()
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/"):
        for v in page.get("Versions", []):
            counts[v["Key"]] = counts.get(v["Key"], 0) + 1
        for m in page.get("DeleteMarkers", []):
            if m.get("IsLatest"):
                hidden.add(m["Key"])
    return counts, hidden


def verify_remote(
    url: str, local_dir: Path | None = None, client: Any = None, engine_key: str | None = None
) -> RemoteReport:
    """Verifies ``s3://bucket/prefix/INCIDENT`` and compares it with ``local_dir`` when
    that holds a trail; checkpoints are checked against ``engine_key`` (the
    inventory's) when given."""
    loc = parse_s3_url(url)
    s3 = client or s3_client()
    counts, hidden = _versions(s3, loc.bucket, loc.base)
    base = loc.base + "/"

    def get(key: str) -> bytes | None:
        if base + key not in counts or base + key in hidden:
            return None
        return bytes(s3.get_object(Bucket=loc.bucket, Key=base + key)["Body"].read())

    remote_seqs = sorted(
        int(m.group(1))
        for k in counts
        if (m := _RECORD_KEY.match(k[len(base) :])) and k not in hidden
    )
    remote_lines = {seq: get(f"trail/{seq}.json") or b"" for seq in remote_seqs}
    fetched: dict[str, bytes | None] = {}

    def artifact(digest: str) -> bytes | None:
        if digest not in fetched:
            fetched[digest] = get(f"{ARTIFACTS}/{digest}")
        return fetched[digest]

    checkpoint_keys = sorted(
        k[len(base) :] for k in counts if _CHECKPOINT_KEY.match(k[len(base) :]) and k not in hidden
    )
    checkpoint_lines = [get(k) or b"" for k in checkpoint_keys]
    ordered = [remote_lines[s] for s in remote_seqs]
    evidence = None
    if ordered:
        evidence = verify_evidence(
            ordered,
            artifact,
            checkpoint_lines if checkpoint_keys else None,
            engine_key=engine_key,
            incident=loc.incident_id,
        )
        result = evidence.chain
    else:
        result = VerifyResult(False, 0, 0, "no records")
    differences = [
        f"rewritten: {k[len(base) :]} has {n} versions (a new version was put over the locked one)"
        for k, n in sorted(counts.items())
        if n > 1
    ]
    differences += [f"hidden: {k[len(base) :]} has a delete marker" for k in sorted(hidden)]
    report = RemoteReport(result, sum(counts.values()), differences, evidence=evidence)
    report.late = _late(s3, loc.bucket, base, checkpoint_keys)
    if local_dir is not None and (Path(local_dir) / "trail.jsonl").exists():
        report.compared_with = str(local_dir)
        report.differences += _compare(Path(local_dir), remote_lines, artifact)
        report.differences += _rollback(Path(local_dir), checkpoint_lines)
    return report


def _late(s3: Any, bucket: str, base: str, checkpoint_keys: list[str]) -> list[str]:
    """Checkpoints uploaded late say the copy was made after the fact: it proves what
    the local trail held then, not what it held as the incident ran."""
    late = []
    for key in checkpoint_keys:
        meta = s3.head_object(Bucket=bucket, Key=base + key).get("Metadata", {})
        if meta.get("late") != "false":
            late.append(f"{key} at {meta.get('uploaded-at', 'an unknown time')}")
    if not late:
        return []
    return [
        f"late: {len(late)} of {len(checkpoint_keys)} checkpoint(s) were uploaded after the "
        f"fact, not by the run as it ran (first: {late[0]})"
    ]


def _rollback(local_dir: Path, checkpoint_lines: list[bytes]) -> list[str]:
    """Every checkpoint the WORM copy holds must still match the local trail."""
    import json

    local = trail_lines(local_dir)
    last = max(local) if local else -1
    out = []
    for raw in checkpoint_lines:
        try:
            cp = json.loads(raw)
            seq, digest = int(cp["seq"]), str(cp["hash"])
        except (ValueError, KeyError, TypeError):
            continue
        if seq > last:
            out.append(
                f"rolled back: the WORM copy holds a checkpoint of seq {seq} ({cp.get('time')}) "
                f"but the local trail ends at seq {last}"
            )
        elif seq not in local or json.loads(local[seq]).get("hash") != digest:
            out.append(
                f"rewritten: the local trail's seq {seq} is not the one checkpointed at "
                f"{cp.get('time')} in the WORM copy"
            )
    return out


def _compare(local_dir: Path, remote_lines: dict[int, bytes], artifact: Any) -> list[str]:
    import json

    out: list[str] = []
    local = trail_lines(local_dir)
    for seq, raw in sorted(local.items()):
        remote = remote_lines.get(seq)
        if remote is None:
            out.append(f"missing remotely: trail/{seq}.json")
        elif remote != raw:
            out.append(f"changed: trail/{seq}.json differs from local seq {seq}")
        rec = json.loads(raw)
        digest = rec["data"].get("sha256") if rec.get("kind") == "artifact" else None
        if isinstance(digest, str):
            content = artifact(digest)
            if content is None:
                out.append(f"missing remotely: artifacts/{digest}")
            elif hashlib.sha256(content).hexdigest() != digest:
                out.append(f"changed: artifacts/{digest}")
    out += [f"remote only: trail/{seq}.json" for seq in sorted(set(remote_lines) - set(local))]
    return out
