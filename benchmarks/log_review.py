"""Log review throughput and memory, beside ``grep -c`` on the same file.

Generates a seeded corpus in the real format mix (``tasks.logs.corpus``: 24 hours
of the stack's lines as a collector captures them, Docker ``--timestamps`` prefix,
payloads shaped like the real excerpts in tests/fixtures/logs — cloudflared text and
JSON, journald-wrapped cloudflared, proxy text/JSON, JSON-RPC, Claude Desktop and
VS Code MCP lines, multi-line Go panics) of the requested size
in a temporary directory, runs the review of a one-hour window (20:00-21:00 of the
24 h, i.e. bytes ~83-88 % into the file, plus the one-hour baseline before it) in
a subprocess, which reports its own peak RSS and its prescan process's. ``grep -c`` of one detection pattern
runs over the same file in the same run. The corpus is deleted afterwards.

Each contender runs ``--repeat`` times (default 3, grep first, then the review
runs in one subprocess) and the fastest run of each counts: the machine is shared,
and the minimum is the run least disturbed by others. CPU time (user + system) is
reported beside wall time for the same reason, and the 1-minute load average before
and after the review runs.

The last line printed is one JSON object::

    {"bench": "log_review", "bytes": …, "seconds": …, "grep_seconds": …,
     "ratio": …, "cpu_seconds": …, "grep_cpu_seconds": …, "cpu_ratio": …,
     "peak_rss_mb": …, "load_1m": [before, after], …}

``seconds`` is the wall time of the ``review()`` call, measured inside the
subprocess after the redaction library (detect-secrets' plugins, ~1 s, once per
process) is loaded; ``process_seconds`` (and ``process_ratio``) add the interpreter
start-up, imports, that load and every repeat, for transparency.

The review may run on two cores (``tasks/logs/prescan.py``: a forked process judges
blocks ahead of the scan, by default only when a core is to spare; ``--processes``
chooses; ``processes`` in the output says, per run, what happened). ``cpu_seconds``
then adds both processes' CPU, and ``peak_rss_mb`` is the SUM of both processes'
peaks (pages shared after the fork counted twice: an upper bound).

Usage: ``python benchmarks/log_review.py [SIZE] [--repeat N] [--stamps docker|rfc3339nano]
[--processes auto|1|2] [--corpus FILE]``
(bytes, or 1G / 200M; default 1G; ``rfc3339nano``: the prefix podman and kubectl
write, fraction trimmed, so a block holds stamps of several widths).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.logs.corpus import write_corpus  # noqa: E402

PATTERN = "IP validation failed"
DAY = datetime(2026, 11, 21, tzinfo=UTC)
CHILD = """
import json, sys, time
from datetime import UTC, datetime
from tasks.logs import ReviewConfig, Source, Window, review
from tasks.logs.corpus import ALLOWED_RANGES, EXPECTED_LOCATIONS, TOOL_ALLOWLIST
config = ReviewConfig(allowed_ip_ranges=ALLOWED_RANGES, tool_allowlist=TOOL_ALLOWLIST,
                      expected_tunnel_locations=EXPECTED_LOCATIONS)
window = Window(datetime(2026, 11, 21, 20, tzinfo=UTC), datetime(2026, 11, 21, 21, tzinfo=UTC))
from core.redact import Redactor
Redactor().text("warm-up")  # detect-secrets' plugins load once per process (process_seconds)
import resource
walls, cpus, prescanned = [], [], []
for _ in range(int(sys.argv[2])):
    started, cpu = time.perf_counter(), time.process_time()
    ahead = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = review([Source.from_file("stack", sys.argv[1])], window, config,
                    parallel_bytes=None if sys.argv[3] == "auto" else int(sys.argv[3]))
    prescanned.append(result.per_source["stack"].prescanned_blocks)
    walls.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # + the prescan process's CPU
    cpus.append(time.process_time() - cpu + after.ru_utime + after.ru_stime
                - ahead.ru_utime - ahead.ru_stime)
counts = result.per_source["stack"]
import resource
own = resource.getrusage(resource.RUSAGE_SELF)
workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the prescan processes, joined
print(json.dumps({"walls": walls, "cpus": cpus, "findings": len(result.findings),
                  "prescanned_blocks": prescanned,
                  "own_rss_kb": own.ru_maxrss, "prescan_rss_kb": workers.ru_maxrss,
                  "prescan_cpus": workers.ru_utime + workers.ru_stime,
                  "lines_in_window": counts.lines_in_window,
                  "parsed": counts.parsed, "formats": counts.formats,
                  "bytes_read": counts.bytes_read, "seeked": counts.seeked,
                  "ip_validation_hits": sum(f.count for f in result.findings
                                            if f.rule_id == "LR001")}))
"""


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", default="1G", help="corpus size (default 1G)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each contender; the fastest counts"
    )
    parser.add_argument(
        "--stamps",
        choices=("docker", "rfc3339nano"),
        default="docker",
        help="the collector's prefix: docker --timestamps (nine fraction digits, default) "
        "or RFC3339Nano with trailing zeros trimmed (podman logs -t, kubectl --timestamps)",
    )
    parser.add_argument(
        "--processes",
        choices=("auto", "1", "2"),
        default="auto",
        help="auto (default): as mcp-ir review does, a prescan process for a file this "
        "large when a core is to spare (tasks/logs/prescan.py); 1: never; 2: always",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        help="keep the corpus in this file and reuse it when it exists (generating 1 GiB "
        "takes minutes); SIZE and --stamps apply only when it is written",
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    parallel = {"auto": "auto", "1": "-1", "2": "0"}[args.processes]
    with tempfile.TemporaryDirectory(prefix="log-review-bench-") as tmp:
        path = args.corpus or Path(tmp) / "stack.log"
        started = time.perf_counter()
        if args.corpus is not None and args.corpus.is_file():
            corpus_bytes = path.stat().st_size
            print(f"corpus: {corpus_bytes} bytes, reused from {path}", file=sys.stderr)
        else:
            info = write_corpus(path, size, DAY, trimmed=args.stamps == "rfc3339nano")
            corpus_bytes = info.bytes
            print(
                f"corpus: {info.bytes} bytes, {info.lines} lines, "
                f"{time.perf_counter() - started:.1f}s to generate",
                file=sys.stderr,
            )
        # Warm the page cache equally for both contenders.
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)

        grep_walls, grep_cpus = [], []
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            grep = subprocess.run(
                ["grep", "-c", PATTERN, str(path)], capture_output=True, text=True, check=True
            )
            grep_walls.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            grep_cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(args.repeat), str(parallel)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        process_seconds = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        detail = json.loads(child.stdout.strip().splitlines()[-1])
        # Both processes' peaks added (shared copy-on-write pages count twice: an upper bound).
        peak_kb = detail.pop("own_rss_kb") + detail.pop("prescan_rss_kb")
        walls, cpus = detail.pop("walls"), detail.pop("cpus")
        print(
            f"review: {detail}; grep -c {PATTERN!r}: {grep.stdout.strip()} (whole file); "
            f"review wall {[round(w, 3) for w in walls]}, grep wall "
            f"{[round(w, 3) for w in grep_walls]}",
            file=sys.stderr,
        )
    seconds, grep_seconds = min(walls), min(grep_walls)
    cpu, grep_cpu = min(cpus), min(grep_cpus)
    print(
        json.dumps(
            {
                "bench": "log_review",
                "bytes": corpus_bytes,
                "seconds": round(seconds, 3),
                "grep_seconds": round(grep_seconds, 3),
                "ratio": round(seconds / grep_seconds, 2),
                "cpu_seconds": round(cpu, 3),
                "grep_cpu_seconds": round(grep_cpu, 3),
                "cpu_ratio": round(cpu / grep_cpu, 2) if grep_cpu else None,
                "repeat": args.repeat,
                "stamps": args.stamps,
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "processes": [2 if n else 1 for n in detail.pop("prescanned_blocks")],
                "process_seconds": round(process_seconds, 3),
                "process_ratio": round(process_seconds / grep_seconds, 2),
                "load_1m": [round(load_before, 2), round(load_after, 2)],
                "window": "20:00-21:00 of 24 h, after a 1 h baseline: ~79-88 % into the file",
            }
        )
    )


if __name__ == "__main__":
    main()
