"""``/metrics`` gauges of the latest audit of each target (registered by
``runbook.metrics.build_metrics``), derived from the audit trails at scrape time:

- ``mcp_ir_audit_check_failing{target,check}``: 1 when the check failed in the
  target's latest audit, else 0;
- ``mcp_ir_audit_drift{target,check}``: 1 when that audit found the check newly
  failing (drift), else 0;
- ``mcp_ir_audit_last_run_timestamp_seconds{target}``.

Labels are inventory target names and fixed check ids only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from audit.store import audit_trails, latest_records
from core.trail import TRAIL_FILE


@dataclass(eq=False)
class AuditCollector(Collector):
    """Re-reads the audit trails only when one of them changed (name, size), so a
    scrape costs a directory listing and a ``stat`` per audit run."""

    evidence_dir: Path
    _stamp: tuple[tuple[str, int], ...] | None = None
    _latest: dict | None = None

    def _records(self) -> dict:
        stamp = []
        for directory in audit_trails(Path(self.evidence_dir)):
            try:
                stamp.append((directory.name, (directory / TRAIL_FILE).stat().st_size))
            except FileNotFoundError:
                continue
        stamp_t = tuple(stamp)
        if self._latest is None or stamp_t != self._stamp:
            self._latest = latest_records(Path(self.evidence_dir))
            self._stamp = stamp_t
        return self._latest

    def collect(self) -> Iterator[Metric]:
        failing = GaugeMetricFamily(
            "mcp_ir_audit_check_failing",
            "1 when the check failed in the target's latest hardening audit.",
            labels=["target", "check"],
        )
        drift = GaugeMetricFamily(
            "mcp_ir_audit_drift",
            "1 when the target's latest hardening audit found the check newly failing.",
            labels=["target", "check"],
        )
        last = GaugeMetricFamily(
            "mcp_ir_audit_last_run_timestamp_seconds",
            "When the target was last audited (Unix time).",
            labels=["target"],
        )
        for target, (rec, drift_rec) in sorted(self._records().items()):
            drifted = {d["id"] for d in (drift_rec.data.get("new_failures") if drift_rec else [])}
            for check in rec.data.get("checks", []):
                failing.add_metric([target, check["id"]], 1.0 if check["status"] == "fail" else 0.0)
                drift.add_metric([target, check["id"]], 1.0 if check["id"] in drifted else 0.0)
            at = dt.datetime.fromisoformat(str(rec.data.get("at") or rec.ts).replace("Z", "+00:00"))
            last.add_metric([target], at.timestamp())
        yield from (failing, drift, last)
