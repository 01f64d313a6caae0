"""Intake throughput: signed alerts accepted per second, with durability and dedup, and
p99 latency at 1, 10 and 50 concurrent clients, as ratios to an HTTP floor measured in
the same run.

Three servers, one after the other, each a uvicorn subprocess (this script with
``--serve``) on the same machine:

- ``floor``: a bare Starlette endpoint on the same uvicorn that reads the body and
  answers 202 — what the HTTP stack alone costs here, now (the baseline);
- ``intake``: the real intake app exactly as ``mcp-ir serve`` runs it (uvicorn's
  default event loop and HTTP parser: uvloop and httptools, installed by the
  project), storing to SQLite (WAL, synchronous=FULL) before each answer, with a
  launcher that only appends the incident id to a file (this measures intake, not
  Prefect);
- ``intake-stock``: the same app on the pure-Python stack (asyncio loop, h11),
  what ``serve`` ran before uvloop/httptools were dependencies.

Clients are asyncio tasks, each with its own keep-alive connection (raw HTTP/1.1
over asyncio streams, so the client's own cost stays small beside the server's on
this 2-core machine). Every alert is distinct; at 10 clients a duplicate pass re-sends
alerts already stored. The machine is shared: compare ratios, not absolute figures,
between runs.

Usage: ``python benchmarks/intake_throughput.py [--requests N] [--servers floor,intake]``.
The last line printed is ONE JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intake.auth import sign  # noqa: E402

SECRET = "bench-secret-value-1f7a"
SOURCE = "bench"


def _inventory(directory: Path) -> Path:
    target = {
        "kind": "compose",
        "compose": {"project": "bench", "data_dir": str(directory / "data")},
        "tunnel": {"id": "tnl_bench"},
        "anthropic": {"credentials": {"bearer_env": "BENCH_ANTHROPIC"}},
    }
    document = {
        "targets": {"prod-eu": target},
        "intake": {
            "dedup_window": "1h",
            "sources": {
                SOURCE: {
                    "format": "generic",
                    "secrets_env": ["BENCH_INTAKE_SECRET"],
                    "rules": [{"match": {"title": "MCP*"}, "target": "prod-eu"}],
                }
            },
        },
    }
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


class _RecordOnly:
    """A launcher that records the incident id and returns (measures intake only)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def __call__(self, settings: Any, *, incident_id: str, **_: Any) -> str:
        self._file.write(incident_id + "\n")
        self._file.flush()
        return incident_id


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from intake.server import run_server
    from runbook.settings import Settings

    if args.serve == "floor":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def accept(request: Request) -> JSONResponse:
            await request.body()
            return JSONResponse({"incident_id": None, "status": "accepted"}, status_code=202)

        async def healthz(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        floor = Starlette(
            routes=[
                Route("/healthz", healthz, methods=["GET"]),
                Route("/alerts/{source}", accept, methods=["POST"]),
            ]
        )
        uvicorn.run(floor, port=args.port, log_level="warning")
        return
    settings = Settings(config_path=args.config, evidence_dir=args.evidence)
    if args.serve == "intake-stock":
        from intake.app import create_app

        app = create_app(settings, launcher=_RecordOnly(args.record), metrics=True)
        uvicorn.run(app, port=args.port, log_level="warning", loop="asyncio", http="h11")
        return
    # metrics=True as in ``mcp-ir serve``: the alert counters are on the request path.
    run_server(
        settings,
        port=args.port,
        launcher=_RecordOnly(args.record),
        metrics=True,
        log_level="warning",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, alert_id: str) -> bytes:
    body = json.dumps(
        {"alert_id": alert_id, "title": "MCP tunnel token anomaly", "severity": "high"}
    ).encode()
    ts = int(time.time())
    head = (
        f"POST /alerts/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-MCP-IR-Timestamp: {ts}\r\nX-MCP-IR-Signature: {sign(SECRET.encode(), ts, body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return status


async def _client(
    port: int, ids: list[str], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for alert_id in ids:
            started = time.perf_counter()
            writer.write(_request(port, alert_id))
            await writer.drain()
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _run_level(
    port: int, clients: int, per_client: int, prefix: str
) -> tuple[float, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    plan = [[f"{prefix}-{c}-{i}" for i in range(per_client)] for c in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, ids, latencies, statuses) for ids in plan))
    return time.perf_counter() - started, latencies, statuses


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


SERVERS = ("floor", "intake", "intake-stock")


def _start(work: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {**os.environ, "BENCH_INTAKE_SECRET": SECRET}
    evidence = work / name / "evidence"
    evidence.mkdir(parents=True)
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            name,
            "--config",
            str(_inventory(work)),
            "--evidence",
            str(evidence),
            "--record",
            str(work / name / "launches.txt"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server, port
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"{name} server did not start")
        time.sleep(0.1)


def _measure(port: int, requests: int) -> tuple[dict[str, Any], int]:
    """Every level against one server; returns the figures and the 202 count."""
    result: dict[str, Any] = {}
    created = 0  # every 202, warm-up included: each must be a stored alert
    for clients in (1, 10, 50):
        total = requests if clients > 1 else max(200, requests // 5)
        per_client = max(1, total // clients)
        _, _, warm = asyncio.run(_run_level(port, clients, min(per_client, 20), f"warm{clients}"))
        elapsed, lat, statuses = asyncio.run(_run_level(port, clients, per_client, f"c{clients}"))
        created += warm.get(202, 0) + statuses.get(202, 0)
        result[f"c{clients}_rps"] = round(len(lat) / elapsed, 1)
        result[f"c{clients}_p50_ms"] = round(_pct(lat, 0.50) * 1000, 2)
        result[f"c{clients}_p99_ms"] = round(_pct(lat, 0.99) * 1000, 2)
        result[f"c{clients}_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    # Duplicates: the same alerts again, answered 200 from the dedup key.
    elapsed, lat, statuses = asyncio.run(_run_level(port, 10, max(1, requests // 10), "c10"))
    result["dup_c10_rps"] = round(len(lat) / elapsed, 1)
    result["dup_c10_p99_ms"] = round(_pct(lat, 0.99) * 1000, 2)
    result["dup_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    return result, created


def _durability(work: Path, name: str, created: int) -> dict[str, Any]:
    store = work / name / "evidence" / "_intake" / "alerts.sqlite"
    conn = sqlite3.connect(store)
    # Every alert is distinct and all map to one target: the first opens the
    # incident, every later one joins it (correlation): both answer 202, and each
    # is one stored alert (the duplicate pass only counts deliveries).
    stored = conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
    incidents = conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
    conn.close()
    return {
        "incidents": incidents,
        "stored_alerts": stored,
        "accepted_202": created,
        "durable_ok": stored == created,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--evidence", type=Path)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--requests", type=int, default=3000, help="alerts per level")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="which servers to measure, in order (default: floor,intake,intake-stock)",
    )
    args = parser.parse_args()
    if args.serve:
        _serve(args)
        return
    names = [n for n in args.servers.split(",") if n]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise SystemExit(f"--servers: unknown {unknown}; choose from {list(SERVERS)}")

    result: dict[str, Any] = {"bench": "intake", "load_avg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            server, port = _start(work, name)
            try:
                figures, created = _measure(port, args.requests)
            finally:
                server.terminate()
                server.wait(30)
            if name != "floor":
                figures.update(_durability(work, name, created))
            result[name] = figures
            print(f"{name}: {json.dumps(figures)}", flush=True)
    floor = result.get("floor")
    for name in ("intake", "intake-stock"):
        if floor and name in result:
            result[f"{name}_c10_vs_floor"] = round(result[name]["c10_rps"] / floor["c10_rps"], 3)
    if "intake" in result and "intake-stock" in result:
        result["intake_c10_vs_stock"] = round(
            result["intake"]["c10_rps"] / result["intake-stock"]["c10_rps"], 2
        )
    result["load_avg_1m_end"] = os.getloadavg()[0]
    result["target_c10"] = {"rps_min": 500, "p99_ms_max": 100}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
