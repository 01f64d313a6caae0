"""Collectors against real components: files on disk, CloudWatch Logs on the moto
server, the real container engine (podman, Docker API) and the Kubernetes sandbox,
each driven by its real SDK. Every artifact is window-bounded, hashed and redacted."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3

from core.redact import Redactor, fingerprint
from tasks.logs import ReviewConfig, Source, Window, review
from tasks.logs.collect_cloudwatch import collect_log_group
from tasks.logs.collect_docker import collect_container
from tasks.logs.collect_files import collect_files
from tasks.logs.collect_kubernetes import collect_pod
from tasks.logs.reader import line_ns
from tasks.logs.timestamps import NS, to_ns
from tests.plugins.logs import WINDOW, WriteLog, at


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_rotated_gzip_window_exact_hashed_and_redacted(
    write_log: WriteLog, tmp_path: Path
) -> None:
    write_log("proxy.log.2.gz", [f"{at(19, m)} INFO request n=a{m}" for m in range(60)], gz=True)
    write_log(
        "proxy.log.1",
        [f"{at(20, m)} INFO request n=b{m}" for m in range(30)]
        + [f"{at(20, 30)} DEBUG upstream headers=map[Authorization:[Bearer s3cr3t-t0ken-value]]"],
    )
    current = write_log(
        "proxy.log",
        ["2026-11-21T20:59:59.999999999Z INFO request n=last"]
        + [f"{at(21, m)} INFO request n=c{m}" for m in range(10)],
    )
    artifact = collect_files(Source.from_file("proxy", current), WINDOW, tmp_path / "out")
    text = artifact.path.read_text()
    lines = text.splitlines()
    assert len(lines) == artifact.lines == 32
    assert lines[0].endswith("n=b0") and lines[-1].endswith("n=last")
    # The evidence copy is the window's original bytes; the redacted view is separate.
    assert "s3cr3t-t0ken-value" in text and artifact.redacted_lines == 1
    assert artifact.sha256 == sha256(artifact.path) and artifact.bytes == len(text.encode())
    assert artifact.redacted_path is not None
    view = artifact.redacted_path.read_text()
    assert "s3cr3t-t0ken-value" not in view and len(view.splitlines()) == 32
    assert artifact.redacted_sha256 == sha256(artifact.redacted_path)
    assert artifact.problems == ()
    # The secret-free evidence copy: the original line for line, the secret's line
    # withheld and named by its fingerprint.
    assert artifact.evidence_path is not None
    kept = artifact.evidence_path.read_bytes().split(b"\n")[:-1]
    original = artifact.path.read_bytes().split(b"\n")[:-1]
    [(number, mark)] = artifact.withheld
    assert original[number - 1].endswith(b"Bearer s3cr3t-t0ken-value]]")
    assert mark == fingerprint(original[number - 1]) and mark.encode() in kept[number - 1]
    assert b"s3cr3t" not in kept[number - 1] and len(kept) == len(original) == 32
    assert [k for i, k in enumerate(kept) if i != number - 1] == [
        o for i, o in enumerate(original) if i != number - 1
    ]
    assert artifact.evidence_sha256 == sha256(artifact.evidence_path)


def test_files_problems_travel_to_the_review(tmp_path: Path) -> None:
    (tmp_path / "proxy.log.1.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    current = tmp_path / "proxy.log"
    current.write_text("".join(f"{at(20, m)} INFO request\n" for m in range(60)))
    artifact = collect_files(Source.from_file("proxy", current), WINDOW, tmp_path / "out")
    assert [p.kind for p in artifact.problems] == ["corrupt"]
    result = review([artifact.as_source()], WINDOW, ReviewConfig(gap_threshold=0))
    assert [f.rule_id for f in result.findings] == ["LR011"]
    assert result.per_source["proxy"].lines_in_window == 60


def test_cloudwatch_paginated_window_exact(aws_env: str, tmp_path: Path) -> None:
    logs = boto3.client("logs")
    group = f"/mcp-ir/{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="proxy")
    start_ms = (int(time.time()) - 3600) * 1000
    end_ms = start_ms + 60_000
    stamps = [start_ms - 1, start_ms, *range(start_ms + 5000, end_ms, 5000), end_ms - 1, end_ms]
    events = [{"timestamp": t, "message": f"INFO request n={i}"} for i, t in enumerate(stamps)]
    events[3]["message"] = "WARN IP validation failed: 203.0.113.8 is not a private address"
    logs.put_log_events(logGroupName=group, logStreamName="proxy", logEvents=events)
    window = Window(
        datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC)
    )
    artifact = collect_log_group(logs, group, window, tmp_path, page_size=3, name="cw-proxy")
    lines = artifact.path.read_bytes().splitlines()
    assert artifact.lines == len(lines) == len(stamps) - 2
    assert [line_ns(x) for x in lines] == [t * 1_000_000 for t in stamps[1:-1]]
    assert lines[0].endswith(b"n=1") and lines[-1].endswith(f"n={len(stamps) - 2}".encode())
    assert artifact.sha256 == sha256(artifact.path)
    result = review([artifact.as_source()], window, ReviewConfig(gap_threshold=0))
    assert [(f.rule_id, f.key) for f in result.findings] == [("LR001", "203.0.113.8")]


def test_cloudwatch_missing_group_is_a_log_finding(aws_env: str, tmp_path: Path) -> None:
    logs = boto3.client("logs")
    artifact = collect_log_group(logs, "/mcp-ir/does-not-exist", WINDOW, tmp_path)
    assert artifact.lines == 0 and [p.kind for p in artifact.problems] == ["unreadable"]
    result = review([artifact.as_source()], WINDOW)
    assert "LR010" in {f.rule_id for f in result.findings}


def test_docker_container_window_exact_and_secrets_redacted(compose_stack, tmp_path: Path) -> None:
    client = compose_stack.client
    name = compose_stack.containers["cloudflared"]
    time.sleep(3.5)  # a few seconds of debug lines carrying the canary
    every = client.containers.get(name).logs(timestamps=True).splitlines()
    stamps = [line_ns(x) for x in every]
    assert len(every) >= 8 and None not in stamps
    # podman stamps may share a second: cut at the second distinct time, end at the last
    start_ns = min(ns for ns in stamps if ns > stamps[0])
    end_ns = stamps[-1]
    window = Window(
        datetime.fromtimestamp(start_ns // NS, UTC) + timedelta(microseconds=start_ns % NS // 1000),
        datetime.fromtimestamp(end_ns // NS, UTC) + timedelta(microseconds=end_ns % NS // 1000),
    )
    assert to_ns(window.start) <= start_ns and to_ns(window.end) <= end_ns
    expected = [
        x
        for x, ns in zip(every, stamps, strict=True)
        if to_ns(window.start) <= ns < to_ns(window.end)
    ]
    assert every[0] not in expected and every[-1] not in expected and len(expected) >= 4
    artifact = collect_container(
        client, name, window, tmp_path, redactor=Redactor([compose_stack.token])
    )
    data = artifact.path.read_bytes()
    assert artifact.lines == len(expected) == len(data.splitlines())
    assert data.splitlines() == expected  # the original bytes, canary included
    assert artifact.redacted_path is not None
    view = artifact.redacted_path.read_bytes()
    assert compose_stack.canary.encode() not in view
    assert compose_stack.token.encode() not in view
    assert artifact.redacted_lines > 0 and artifact.sha256 == sha256(artifact.path)


def test_docker_proxy_logs_reviewed_end_to_end(compose_stack, tmp_path: Path) -> None:
    client = compose_stack.client
    now = datetime.now(UTC)
    window = Window(now - timedelta(minutes=5), now + timedelta(seconds=1))
    proxy = collect_container(
        client, compose_stack.containers["mcp-proxy"], window, tmp_path, name="mcp-proxy"
    )
    tunnel = collect_container(
        client, compose_stack.containers["cloudflared"], window, tmp_path, name="cloudflared"
    )
    config = ReviewConfig(expected_tunnel_locations=["ams", "fra"], gap_threshold=0)
    result = review([proxy.as_source(), tunnel.as_source()], window, config)
    rules = {(f.rule_id, f.source) for f in result.findings}
    assert {("LR001", "mcp-proxy"), ("LR002", "mcp-proxy"), ("LR003", "mcp-proxy")} <= rules
    assert not any(f.rule_id == "LR007" for f in result.findings)
    locations = [e.what for e in result.timeline if e.source == "cloudflared"]
    assert locations.count("tunnel connection at ams01") == 1 and len(locations) >= 4
    texts = " ".join([f.sample for f in result.findings] + [e.text for e in result.timeline])
    assert compose_stack.canary not in texts


def test_docker_missing_container_is_a_log_finding(engine_client, tmp_path: Path) -> None:
    artifact = collect_container(engine_client, "no-such-container-here", WINDOW, tmp_path)
    assert [p.kind for p in artifact.problems] == ["unreadable"]
    assert "LR010" in {f.rule_id for f in review([artifact.as_source()], WINDOW).findings}


def test_kubernetes_pod_window_exact(k8s, tmp_path: Path) -> None:
    pod = k8s.seeded.pods[0]
    base = int(time.time()) - 600
    for i in range(20):
        k8s.cluster.append_log(
            k8s.namespace,
            pod,
            "mcp-proxy",
            f"INFO request remote=10.0.0.{i}:1 n={i}",
            ts=base + i * 10,
        )
    window = Window(datetime.fromtimestamp(base + 50, UTC), datetime.fromtimestamp(base + 150, UTC))
    artifact = collect_pod(k8s.api, k8s.namespace, pod, "mcp-proxy", window, tmp_path)
    lines = artifact.path.read_bytes().splitlines()
    assert [x.rsplit(b"n=", 1)[1] for x in lines] == [str(i).encode() for i in range(5, 15)]
    assert artifact.sha256 == sha256(artifact.path)
    config = ReviewConfig(allowed_ip_ranges=["10.0.0.0/29"], gap_threshold=0)
    result = review([artifact.as_source()], window, config)
    assert {f.key for f in result.findings} == {f"10.0.0.{i}" for i in range(8, 15)}


def test_kubernetes_missing_pod_is_a_log_finding(k8s, tmp_path: Path) -> None:
    artifact = collect_pod(k8s.api, k8s.namespace, "gone-pod", "mcp-proxy", WINDOW, tmp_path)
    assert [p.kind for p in artifact.problems] == ["unreadable"]


def test_private_key_block_is_withheld_line_by_line(write_log: WriteLog, tmp_path: Path) -> None:
    # A key printed into a log spans lines; its body lines match no secret shape alone.
    body = [secrets.token_urlsafe(48) for _ in range(3)]
    current = write_log(
        "app.log",
        [
            f"{at(20, 1)} INFO loading key",
            f"{at(20, 1)} -----BEGIN RSA PRIVATE KEY-----",
            *body,
            "-----END RSA PRIVATE KEY-----",
            f"{at(20, 2)} INFO key loaded",
        ],
    )
    artifact = collect_files(Source.from_file("app", current), WINDOW, tmp_path / "out")
    assert artifact.redacted_path is not None and artifact.evidence_path is not None
    view = artifact.redacted_path.read_text()
    kept = artifact.evidence_path.read_text()
    for line in body:
        assert line in artifact.path.read_text()  # the original keeps everything
        assert line not in view and line not in kept
    assert [n for n, _ in artifact.withheld] == [2, 3, 4, 5, 6]
    assert kept.splitlines()[0].endswith("INFO loading key")
    assert kept.splitlines()[-1].endswith("INFO key loaded")
