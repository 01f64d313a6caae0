"""A realistic, seeded log corpus of the tunnel stack, for drills, tests and the
benchmark.

One time-ordered file in the format collectors write (Docker's ``--timestamps``
prefix, then the container's line): mostly proxy request lines (text and JSON)
from allowed client ranges, cloudflared lines, MCP JSON-RPC tool calls, and a
trickle of what the detections look for (IP validation failures, TLS handshake
failures, ``no route for host`` probes, requests from outside the ranges, tool
calls outside the allowlist), plus a few unknown lines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .timestamps import NS, format_ns, to_ns

ALLOWED_RANGES = ["10.0.0.0/8", "192.168.0.0/16"]
TOOL_ALLOWLIST = {"github": ["search_issues", "get_issue", "list_pulls"]}
EXPECTED_LOCATIONS = ["ams", "fra"]


@dataclass(frozen=True)
class CorpusInfo:
    """What was written: size, line count and the time span covered."""

    path: Path
    bytes: int
    lines: int
    start: datetime
    end: datetime


_CLIENTS = [f"10.{n // 250}.{n % 7}.{n % 250 + 1}" for n in range(400)] + [
    f"192.168.{n}.{n * 3 % 250 + 2}" for n in range(100)
]


def _payloads(rng: random.Random, ts: str) -> str:
    roll = rng.random()
    ip = rng.choice(_CLIENTS)
    port = rng.randrange(1024, 65535)
    if roll < 0.55:
        return (
            f"INFO request host=mcp.corp.example method=POST path=/mcp status=200 "
            f"duration_ms={rng.randrange(3, 90)} remote={ip}:{port}"
        )
    if roll < 0.75:
        return (
            f'{{"time":"{ts}","level":"INFO","msg":"request","host":"mcp.corp.example",'
            f'"remote_addr":"{ip}:{port}","path":"/mcp","status":200}}'
        )
    if roll < 0.90:
        tool = rng.choice(TOOL_ALLOWLIST["github"])
        return (
            f'{{"jsonrpc":"2.0","id":{rng.randrange(1 << 20)},"method":"tools/call",'
            f'"params":{{"name":"{tool}"}},"session_id":"s-{rng.randrange(1 << 30):08x}",'
            f'"server":"github"}}'
        )
    if roll < 0.995:
        return (
            f"{ts[:19]}Z DBG POST https://mcp.corp.example/mcp HTTP/1.1 connIndex="
            f"{rng.randrange(4)} content-length={rng.randrange(100, 900)} event=1 "
            f"ingressRule=0 originService=http://localhost:8080 path=/mcp"
        )
    rare = rng.randrange(8)
    if rare == 0:
        return (
            f"WARN IP validation failed: 203.0.113.{rng.randrange(1, 255)} is not a private address"
        )
    if rare == 1:
        return (
            f'ERROR tls handshake failed remote={ip}:{port} error="remote error: bad certificate"'
        )
    if rare == 2:
        return (
            f"WARN no route for host host=admin{rng.randrange(9)}.corp.example remote={ip}:{port}"
        )
    if rare == 3:
        return (
            f"INFO request host=mcp.corp.example method=POST path=/mcp status=200 "
            f"duration_ms=7 remote=198.51.100.{rng.randrange(1, 255)}:{port}"
        )
    if rare == 4:
        return (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"},'
            '"session_id":"s-1","server":"github"}'
        )
    if rare == 5:
        loc = rng.choice(["ams01", "fra08", "sin02"])
        return (
            f"{ts[:19]}Z INF Registered tunnel connection connIndex={rng.randrange(4)} "
            f"connection=6f1c0e54-9a1d-4a52-9d8e-1f2e3d4c5b6a event=0 ip=198.41.200.13 "
            f"location={loc} protocol=quic"
        )
    if rare == 6:
        return f"goroutine {rng.randrange(1000)} [running]: unexpected output"
    return "INFO route configured host=mcp.corp.example upstream=http://10.0.0.5:3000"


def write_corpus(
    path: Path, size: int, start: datetime, *, span: timedelta = timedelta(hours=24), seed: int = 7
) -> CorpusInfo:
    """Writes about ``size`` bytes of time-ordered lines spread evenly over ``span``."""
    rng = random.Random(seed)
    average = 160  # bytes per line, measured on this generator
    total = max(1, size // average)
    start_ns = to_ns(start)
    step = max(1, int(span.total_seconds() * NS) // total)
    written = lines = 0
    ns = start_ns
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        batch: list[str] = []
        while written < size:
            ts = format_ns(ns)
            line = f"{ts} {_payloads(rng, ts)}\n"
            batch.append(line)
            written += len(line)
            lines += 1
            ns += step
            if len(batch) >= 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return CorpusInfo(path, written, lines, start, start + timedelta(seconds=(ns - start_ns) / NS))
