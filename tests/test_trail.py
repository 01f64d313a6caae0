"""The evidence trail: canonical form pinned, verification names the first bad seq."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from core.redact import Redactor
from core.trail import GENESIS, Trail, record_hash, verify_dir
from runbook.cli import main

# Pinned: changing the canonical form breaks every trail already written.
PINNED = "0d140b32d2032d9c4b483ac6779dd9f07098829d23dbeb5490de210c6f9f4474"


def test_canonical_form_has_a_known_digest() -> None:
    record = {
        "seq": 0,
        "ts": "2026-11-21T00:00:00.000000Z",
        "kind": "incident.opened",
        "step": None,
        "data": {"target": "prod-eu", "note": "café ✓"},
        "prev": GENESIS,
    }
    assert record_hash(record) == PINNED
    assert record_hash({**record, "hash": "ignored"}) == PINNED


def _trail(tmp_path: Path, n: int = 5) -> Trail:
    trail = Trail.open(tmp_path, "INC-test-1")
    for i in range(n):
        trail.append("step.started", f"s{i}", {"i": i})
    trail.add_artifact(b"log line\n", name="x.log", step="s0")
    return trail


def test_records_chain_and_verify(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    records = trail.records()
    assert [r.seq for r in records] == list(range(6))
    assert records[0].prev == GENESIS
    assert all(records[i].prev == records[i - 1].hash for i in range(1, 6))
    result = verify_dir(trail.dir)
    assert result.ok and result.records == 6
    assert result.line().startswith("ok: 6 records")


def test_flipped_byte_is_named_by_seq(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    lines = trail.path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"i":3', b'"i":4')
    trail.path.write_bytes(b"\n".join(lines))
    result = verify_dir(trail.dir)
    assert not result.ok and result.bad_seq == 3 and "hash mismatch" in result.reason


def test_deleted_record_is_a_gap(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    lines = trail.path.read_bytes().split(b"\n")
    del lines[2]
    trail.path.write_bytes(b"\n".join(lines))
    result = verify_dir(trail.dir)
    assert not result.ok and result.bad_seq == 2 and "gap" in result.reason


def test_rehashed_record_breaks_the_link(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    lines = trail.path.read_text().split("\n")
    rec = json.loads(lines[2])
    rec["data"]["i"] = 99
    rec["hash"] = record_hash(rec)
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    trail.path.write_text("\n".join(lines))
    result = verify_dir(trail.dir)
    assert not result.ok and result.bad_seq == 3 and "broken link" in result.reason


def test_altered_and_missing_artifacts(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    digest = trail.records()[-1].data["sha256"]
    (trail.artifacts / digest).write_bytes(b"tampered\n")
    result = verify_dir(trail.dir)
    assert not result.ok and result.bad_seq == 5 and "altered artifact" in result.reason
    (trail.artifacts / digest).unlink()
    result = verify_dir(trail.dir)
    assert not result.ok and result.bad_seq == 5 and "missing artifact" in result.reason


def test_verify_cli_exit_codes(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    trail = _trail(tmp_path)
    assert main(["verify", str(trail.dir)]) == 0
    assert capsys.readouterr().out.startswith("ok: 6 records")
    lines = trail.path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"s1", b"sX")
    trail.path.write_bytes(b"\n".join(lines))
    assert main(["verify", str(trail.dir)]) == 1
    assert "seq 1" in capsys.readouterr().out


def test_secrets_are_redacted_before_writing(tmp_path: Path) -> None:
    trail = Trail.open(tmp_path, "INC-redact-1", Redactor(["s3cr3t-value-xyz"]))
    trail.append(
        "note", None, {"a": "token s3cr3t-value-xyz", "b": "Authorization: Bearer abcdef0123456789"}
    )
    trail.add_artifact(
        b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", name="k.pem"
    )
    everything = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"s3cr3t-value-xyz" not in everything
    assert b"abcdef0123456789" not in everything
    assert b"MIIE" not in everything
    assert verify_dir(trail.dir).ok


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    trail = Trail.open(tmp_path, "INC-concurrent-1")

    def writer(n: int) -> None:
        other = Trail.open(tmp_path, "INC-concurrent-1")
        for i in range(25):
            other.append("w", None, {"writer": n, "i": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify_dir(trail.dir)
    assert result.ok and result.records == 100
