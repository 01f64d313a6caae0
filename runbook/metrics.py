"""Prometheus metrics of mcp-ir, served at ``GET /metrics`` by ``mcp-ir serve``.

Two kinds:

- Counted by the intake as alerts arrive (reset when the server restarts, as
  Prometheus counters may): ``mcp_ir_alerts_received_total{source}``,
  ``mcp_ir_alerts_rejected_total{source,reason}``,
  ``mcp_ir_alerts_deduplicated_total{source}``. A source name that is not configured
  is counted as ``_unknown`` (senders must not be able to mint label values).
- Derived at scrape time from what is on disk, so they cover every run whatever
  process ran it: ``mcp_ir_incidents{state}`` (running, waiting_for_approval,
  succeeded, failed, rejected — a gate timeout counts as rejected),
  ``mcp_ir_gate_wait_seconds`` (histogram: gate opened → passed, rejected or timed
  out), ``mcp_ir_time_to_containment_seconds`` (histogram: ``incident.opened`` →
  ``stop_stack`` succeeded) and ``mcp_ir_notification_outbox_depth`` (undelivered
  messages in the Slack outbox files under the evidence dir). Each trail is parsed
  again only when its size or mtime changed, and a whole scrape result is reused for
  ``cache_s`` seconds, so a scrape costs a ``stat`` per incident.

The hardening audit's gauges (``mcp_ir_audit_*``, per target and check) come from
``audit.metrics``.

No label or value ever holds alert content or a secret: labels are configured source
names, fixed reason codes, step keys and fixed states.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from core.trail import TRAIL_FILE, Record, read_records
from runbook.incident_view import build_view, ts

INCIDENT_STATES = ("running", "waiting_for_approval", "succeeded", "failed", "rejected")
GATE_WAIT_BUCKETS = (1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
CONTAINMENT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
REJECT_REASONS = (
    "unknown_source",
    "bad_content_length",
    "too_large",
    "unauthorized",
    "malformed",
    "schema",
    "unmapped",
    "store_unavailable",
)
UNKNOWN_SOURCE = "_unknown"
OUTBOX_FILE = "slack-outbox.sqlite3"  # notifications.outbox.OUTBOX_FILE
_GATE_END = {"gate.passed", "gate.rejected", "gate.timeout"}


class AlertMetrics:
    """The intake's counters (one instance per registry).

    Args:
        registry: where the counters are registered.
        sources: configured source names; any other name is counted as ``_unknown``.
    """

    def __init__(self, registry: CollectorRegistry, sources: Iterable[str]) -> None:
        self._sources = frozenset(sources)
        self._received = Counter(
            "mcp_ir_alerts_received",
            "Alert requests received, by source (before any check).",
            ["source"],
            registry=registry,
        )
        self._rejected = Counter(
            "mcp_ir_alerts_rejected",
            "Alerts that did not open an incident, by source and reason.",
            ["source", "reason"],
            registry=registry,
        )
        self._deduplicated = Counter(
            "mcp_ir_alerts_deduplicated",
            "Alerts answered as duplicates of an open incident, by source.",
            ["source"],
            registry=registry,
        )
        for source in self._sources:
            self._received.labels(source)
            self._deduplicated.labels(source)

    def _label(self, source: str) -> str:
        return source if source in self._sources else UNKNOWN_SOURCE

    def received(self, source: str) -> None:
        """Counts one request to ``POST /alerts/{source}``."""
        self._received.labels(self._label(source)).inc()

    def rejected(self, source: str, reason: str) -> None:
        """Counts one refusal; ``reason`` is one of :data:`REJECT_REASONS`."""
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self._rejected.labels(self._label(source), reason).inc()

    def deduplicated(self, source: str) -> None:
        """Counts one duplicate."""
        self._deduplicated.labels(self._label(source)).inc()


@dataclass(frozen=True)
class IncidentSummary:
    """What the metrics need from one trail."""

    state: str
    gate_waits: tuple[float, ...]
    containment_s: float | None


def summarize(records: list[Record]) -> IncidentSummary:
    """Reduces a trail to its state, its resolved gate waits and time to containment."""
    view = build_view(records)
    if any(r.kind == "run.ended" for r in records) and view.status != "running":
        state = {"timed_out": "rejected"}.get(view.status, view.status)
        if state not in INCIDENT_STATES:
            state = "failed"
    elif any(s.state == "awaiting approval" for s in view.steps.values()):
        state = "waiting_for_approval"
    else:
        state = "running"
    waits: list[float] = []
    opened_at: dict[str, str] = {}
    for rec in records:
        if rec.step is None:
            continue
        if rec.kind == "gate.opened":
            opened_at[rec.step] = rec.ts
        elif rec.kind in _GATE_END and rec.step in opened_at:
            start = opened_at.pop(rec.step)
            waits.append(max(0.0, (ts(rec.ts) - ts(start)).total_seconds()))
    containment = None
    opened = next((r for r in records if r.kind == "incident.opened"), None)
    stopped = next(
        (r for r in records if r.kind == "step.succeeded" and r.step == "stop_stack"), None
    )
    if opened is not None and stopped is not None:
        containment = max(0.0, (ts(stopped.ts) - ts(opened.ts)).total_seconds())
    return IncidentSummary(state, tuple(waits), containment)


def outbox_depth(path: Path) -> int:
    """Undelivered (``pending``) messages in one Slack outbox file, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    try:
        row = conn.execute("SELECT COUNT(*) FROM messages WHERE status = 'pending'").fetchone()
    except sqlite3.Error:
        return 0
    finally:
        conn.close()
    return int(row[0])


@dataclass
class _Cached:
    stamp: tuple[int, int]
    summary: IncidentSummary


@dataclass(eq=False)
class TrailCollector(Collector):
    """Collects the trail- and outbox-derived metrics of one evidence directory."""

    evidence_dir: Path
    cache_s: float = 1.0
    _trails: dict[Path, _Cached] = field(default_factory=dict)
    _result: tuple[float, list[Metric]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._result is None or now - self._result[0] > self.cache_s:
                self._result = (now, self._build())
            yield from self._result[1]

    def _summaries(self) -> list[IncidentSummary]:
        seen: dict[Path, _Cached] = {}
        if self.evidence_dir.is_dir():
            for path in self.evidence_dir.glob(f"*/{TRAIL_FILE}"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size)
                cached = self._trails.get(path)
                if cached is None or cached.stamp != stamp:
                    cached = _Cached(stamp, summarize(read_records(path)))
                seen[path] = cached
        self._trails = seen
        return [c.summary for c in seen.values()]

    def _build(self) -> list[Metric]:
        summaries = self._summaries()
        states = GaugeMetricFamily(
            "mcp_ir_incidents", "Incidents by state, from the evidence trails.", labels=["state"]
        )
        for state in INCIDENT_STATES:
            states.add_metric([state], sum(1 for s in summaries if s.state == state))
        gate = _histogram(
            "mcp_ir_gate_wait_seconds",
            "Time a gate waited for people: opened -> passed, rejected or timed out.",
            [w for s in summaries for w in s.gate_waits],
            GATE_WAIT_BUCKETS,
        )
        containment = _histogram(
            "mcp_ir_time_to_containment_seconds",
            "Incident opened -> stop_stack succeeded.",
            [s.containment_s for s in summaries if s.containment_s is not None],
            CONTAINMENT_BUCKETS,
        )
        outbox = GaugeMetricFamily(
            "mcp_ir_notification_outbox_depth",
            "Slack messages queued but not delivered yet (all outbox files).",
            value=sum(outbox_depth(p) for p in self._outboxes()),
        )
        return [states, gate, containment, outbox]

    def _outboxes(self) -> list[Path]:
        root = self.evidence_dir
        if not root.is_dir():
            return []
        patterns = (OUTBOX_FILE, f"*/{OUTBOX_FILE}", f"*/*/{OUTBOX_FILE}")
        return sorted({p for pattern in patterns for p in root.glob(pattern)})


def _histogram(
    name: str, documentation: str, values: list[float], bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    buckets = [(_le(b), float(sum(1 for v in values if v <= b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(values))


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass(frozen=True)
class Metrics:
    """A registry with the alert counters and the trail collector."""

    registry: CollectorRegistry
    alerts: AlertMetrics

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def build_metrics(
    evidence_dir: Path,
    sources: Iterable[str],
    cache_s: float = 1.0,
    collectors: Iterable[Collector] = (),
) -> Metrics:
    """A fresh registry for one server (never the global default registry), with
    ``collectors`` (e.g. the warm launch pool) registered as well."""
    registry = CollectorRegistry()
    alerts = AlertMetrics(registry, sources)
    registry.register(TrailCollector(Path(evidence_dir), cache_s))
    from audit.metrics import AuditCollector

    registry.register(AuditCollector(Path(evidence_dir)))
    for collector in collectors:
        registry.register(collector)
    return Metrics(registry, alerts)
