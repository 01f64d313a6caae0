"""A seeded log corpus in the real format mix of an MCP tunnel stack, for drills,
tests and the benchmark.

One time-ordered file as the review sees captured logs: every line carries the
collector's RFC3339Nano prefix (``docker logs --timestamps``), the payload is in
the writer's own format, shaped like the real excerpts in
``tests/fixtures/logs`` (see SOURCES.md there):

- cloudflared text (2024+ ``Registered tunnel connection``, DBG request lines, edge
  losses and reconnects) and cloudflared zerolog JSON;
- journald-wrapped cloudflared lines (a host shipper);
- the proxy's request lines (text and JSON) from the allowed client ranges;
- MCP JSON-RPC tool calls, Claude Desktop ``[server] [info] Message from client``
  and VS Code ``[info] [Client Says]`` lines;
- multi-line records: Go panics with their stack frames;
- a trickle of what the detections look for (IP validation failures, TLS
  handshake failures, ``no route for host`` probes, requests from outside the
  ranges, tool calls outside the allowlist, unexpected edge locations, origin
  unreachable), plus a few unknown lines.
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
_PANIC = [
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x8a1c2e]",
    "",
    "goroutine 184115 [running]:",
    "github.com/cloudflare/cloudflared/connection.(*http2RespWriter).Write.func1()",
    "\t/go/src/github.com/cloudflare/cloudflared/connection/http2.go:236 +0x38",
]


def _payloads(rng: random.Random, ts: str) -> list[str]:
    """The payload line(s) of one event (several for a multi-line record)."""
    roll = rng.random()
    ip = rng.choice(_CLIENTS)
    port = rng.randrange(1024, 65535)
    second = ts[:19] + "Z"
    if roll < 0.30:
        return [
            f"INFO request host=mcp.corp.example method=POST path=/mcp status=200 "
            f"duration_ms={rng.randrange(3, 90)} remote={ip}:{port}"
        ]
    if roll < 0.42:
        return [
            f'{{"time":"{ts}","level":"INFO","msg":"request","host":"mcp.corp.example",'
            f'"remote_addr":"{ip}:{port}","path":"/mcp","status":200}}'
        ]
    if roll < 0.52:
        tool = rng.choice(TOOL_ALLOWLIST["github"])
        return [
            f'{{"jsonrpc":"2.0","id":{rng.randrange(1 << 20)},"method":"tools/call",'
            f'"params":{{"name":"{tool}"}},"session_id":"s-{rng.randrange(1 << 30):08x}",'
            f'"server":"github"}}'
        ]
    if roll < 0.72:
        return [
            f"{second} DBG POST https://mcp.corp.example/mcp HTTP/1.1 connIndex="
            f"{rng.randrange(4)} content-length={rng.randrange(100, 900)} event=1 "
            f"ingressRule=0 originService=http://localhost:8080 path=/mcp"
        ]
    if roll < 0.82:
        return [
            f'{{"level":"debug","connIndex":{rng.randrange(4)},"time":"{second}",'
            f'"message":"rpcconnect: tx (finish = (questionId = {rng.randrange(99)}, '
            f'releaseResultCaps = false))"}}'
        ]
    if roll < 0.88:
        month_day = datetime.fromisoformat(second.replace("Z", "+00:00")).strftime("%b %d %H:%M:%S")
        return [
            f"{month_day} gw-1 cloudflared[978]: {second} INF Tunnel connection curve "
            f"preferences: [X25519MLKEM768 CurveP256] connIndex={rng.randrange(4)} event=0 "
            f"ip=198.41.200.{rng.randrange(1, 250)}"
        ]
    if roll < 0.93:
        tool = rng.choice(TOOL_ALLOWLIST["github"])
        return [
            f"{ts[:23]}Z [github] [info] Message from client: "
            f'{{"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}},'
            f'"jsonrpc":"2.0","id":{rng.randrange(999)}}} {{ metadata: undefined }}'
        ]
    if roll < 0.98:
        return [
            f"{ts[:10]} {ts[11:23]} [info] [Server Says] "
            f'{{"jsonrpc":"2.0","id":{rng.randrange(999)},"result":{{"content":[]}}}}'
        ]
    if roll < 0.995:
        return [
            f"{second} INF Registered tunnel connection connIndex={rng.randrange(4)} "
            f"connection=6f1c0e54-9a1d-4a52-9d8e-1f2e3d4c5b6a event=0 ip=198.41.200.13 "
            f"location={rng.choice(['ams01', 'fra08'])} protocol=quic"
        ]
    return _rare(rng, second, ip, port)


def _rare(rng: random.Random, second: str, ip: str, port: int) -> list[str]:
    rare = rng.randrange(11)
    if rare == 0:
        return [
            f"WARN IP validation failed: 203.0.113.{rng.randrange(1, 255)} is not a private address"
        ]
    if rare == 1:
        return [
            f'ERROR tls handshake failed remote={ip}:{port} error="remote error: bad certificate"'
        ]
    if rare == 2:
        return [
            f"WARN no route for host host=admin{rng.randrange(9)}.corp.example remote={ip}:{port}"
        ]
    if rare == 3:
        return [
            f"INFO request host=mcp.corp.example method=POST path=/mcp status=200 "
            f"duration_ms=7 remote=198.51.100.{rng.randrange(1, 255)}:{port}"
        ]
    if rare == 4:
        return [
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"},'
            '"session_id":"s-1","server":"github"}'
        ]
    if rare == 5:
        return [
            f"{second} INF Registered tunnel connection connIndex={rng.randrange(4)} "
            f"connection=6f1c0e54-9a1d-4a52-9d8e-1f2e3d4c5b6a event=0 ip=198.41.200.13 "
            f"location={rng.choice(['ams01', 'fra08', 'sin02'])} protocol=quic"
        ]
    if rare == 6:
        return list(_PANIC)
    if rare == 7:
        return [
            f'{second} ERR  error="Unable to reach the origin service. The service may be down '
            f"or it may not be responding to traffic from cloudflared: dial tcp 10.0.0.5:3000: "
            f'connect: connection refused" connIndex=0 event=1 ingressRule=0 '
            f"originService=http://10.0.0.5:3000"
        ]
    if rare == 8:
        return [
            f'{second} WRN Serve tunnel error error="connection with edge closed" '
            f"connIndex={rng.randrange(4)} event=0 ip=198.41.192.57",
            f"{second} INF Retrying connection in up to 1s connIndex=1 event=0 ip=198.41.192.57",
        ]
    if rare == 9:
        return [f"goroutine {rng.randrange(1000)} [running]: unexpected output"]
    return ["INFO route configured host=mcp.corp.example upstream=http://10.0.0.5:3000"]


def _trim(stamp: str) -> str:
    """``…:05.120000000Z`` → ``…:05.12Z``; ``…:05.000000000Z`` → ``…:05Z``."""
    whole, _, fraction = stamp[:-1].partition(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


def write_corpus(
    path: Path,
    size: int,
    start: datetime,
    *,
    span: timedelta = timedelta(hours=24),
    seed: int = 7,
    trimmed: bool = False,
) -> CorpusInfo:
    """Writes about ``size`` bytes of time-ordered lines spread evenly over ``span``,
    each behind a collector's stamp: ``docker logs --timestamps`` (nine fraction
    digits) or, ``trimmed``, RFC3339Nano as podman and kubectl write it (trailing
    zeros of the fraction dropped)."""
    rng = random.Random(seed)
    average = 175  # bytes per line, measured on this generator
    total = max(1, size // average)
    start_ns = to_ns(start)
    step = max(1, int(span.total_seconds() * NS) // total)
    written = lines = 0
    ns = start_ns
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        batch: list[str] = []
        while written < size:
            ts = format_ns(ns)
            prefix = _trim(ts) if trimmed else ts
            for payload in _payloads(rng, ts):
                line = f"{prefix} {payload}\n"
                batch.append(line)
                written += len(line)
                lines += 1
            ns += step
            if len(batch) >= 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return CorpusInfo(path, written, lines, start, start + timedelta(seconds=(ns - start_ns) / NS))
