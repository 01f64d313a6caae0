"""Evidence trail: append and verify rates, beside baselines measured in the same run.

Append: ``Trail.append`` (redaction, flock, hash chain, fsync) against the floor of
writing the same JSON line to a file with fsync. Verify: ``verify_dir`` against the
floor of hashing the same file once with SHA-256. Prints ONE JSON object last:
``{"bench": "evidence", "append_per_s": …, "append_floor_per_s": …, "append_ratio": …,
"verify_records_per_s": …, "verify_floor_records_per_s": …, "verify_ratio": …}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.trail import Trail, verify_dir  # noqa: E402


def payload(i: int) -> dict[str, object]:
    return {"step": "stop_stack", "i": i, "container": f"proj-mcp-proxy-{i}", "elapsed_s": 0.123}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor_path = Path(tmp) / "floor.jsonl"
        started = time.perf_counter()
        with open(floor_path, "a", encoding="utf-8") as fh:
            for i in range(args.records):
                fh.write(json.dumps(payload(i), sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        floor_append = time.perf_counter() - started

        trail = Trail.open(Path(tmp), "INC-bench-0001")
        started = time.perf_counter()
        for i in range(args.records):
            trail.append("step.succeeded", "stop_stack", payload(i))
        append = time.perf_counter() - started

        started = time.perf_counter()
        hashlib.sha256(trail.path.read_bytes()).hexdigest()
        floor_verify = time.perf_counter() - started
        started = time.perf_counter()
        result = verify_dir(trail.dir)
        verify = time.perf_counter() - started
        assert result.ok and result.records == args.records
    out = {
        "bench": "evidence",
        "records": args.records,
        "append_per_s": round(args.records / append, 1),
        "append_floor_per_s": round(args.records / floor_append, 1),
        "append_ratio": round(append / floor_append, 2),
        "verify_records_per_s": round(args.records / verify, 1),
        "verify_floor_records_per_s": round(args.records / max(floor_verify, 1e-9), 1),
        "verify_ratio": round(verify / max(floor_verify, 1e-9), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
