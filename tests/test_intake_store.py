"""The SQLite store on its own: durability settings, dedup window, atomic dedup under
concurrent writers, incident ids and the launch state machine."""

from __future__ import annotations

import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from intake.decisions import new_incident_id
from intake.formats import parse_alert
from intake.models import MappedAlert, Severity
from intake.store import AlertStore, connect
from intake.store_read import read_incidents


def mapped(alert_id: str = "a1") -> MappedAlert:
    alert = parse_alert("generic", {"alert_id": alert_id, "title": "t", "severity": "high"})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return MappedAlert(
        alert=alert,
        rule_index=0,
        target="prod-eu",
        severity=Severity.high,
        window_start=now - timedelta(hours=1),
        window_end=now,
        auto_contain=True,
    )


@pytest.fixture
def store(tmp_path):
    s = AlertStore(tmp_path / "alerts.sqlite")
    yield s
    s.close()


def accept(store, key="id:a1", at=1000.0, window=3600.0):
    return store.accept(
        source="src",
        dedup_key=key,
        mapped=mapped(),
        trigger={"source": "src"},
        body_sha256="0" * 64,
        window_s=window,
        received_at=at,
    ).result()


def test_wal_and_synchronous_full(store):
    conn = connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def test_incident_id_shape():
    ident = new_incident_id(datetime(2026, 5, 20, 14, 3, 9, tzinfo=UTC).timestamp())
    assert re.fullmatch(r"INC-20260520-140309-[0-9a-f]{4}", ident)


def test_dedup_window_is_sliding_and_expires(store):
    first = accept(store, at=1000.0)
    assert first.created
    inside = accept(store, at=1000.0 + 3599)
    assert (inside.created, inside.incident_id) == (False, first.incident_id)
    # Last seen at 4599: still the same incident 3600 s after that …
    assert accept(store, at=4599.0 + 3600).incident_id == first.incident_id
    # … and a new one once the alert stayed quiet longer than the window.
    later = accept(store, at=8199.0 + 3601)
    assert later.created and later.incident_id != first.incident_id
    assert len(read_incidents(store.path)) == 2


def test_concurrent_submitters_get_one_incident(store):
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [
            pool.submit(
                lambda: store.accept(
                    source="src",
                    dedup_key="id:storm",
                    mapped=mapped("storm"),
                    trigger={},
                    body_sha256="0" * 64,
                    window_s=3600,
                    received_at=1000.0,
                ).result()
            )
            for _ in range(200)
        ]
        receipts = [f.result() for f in futures]
    assert sum(r.created for r in receipts) == 1
    assert len({r.incident_id for r in receipts}) == 1


def test_two_connections_racing_the_upsert_make_one_row(tmp_path):
    """The dedup statement is atomic on its own, even without the single writer."""
    from intake.store import SCHEMA, UPSERT_DEDUP

    path = tmp_path / "race.sqlite"
    setup = connect(path)
    setup.executescript(SCHEMA)
    setup.close()

    def insert(i: int) -> str:
        conn = connect(path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                UPSERT_DEDUP,
                {
                    "source": "s",
                    "dedup_key": "k",
                    "candidate": f"INC-{i}",
                    "now": 1.0,
                    "window": 60.0,
                },
            ).fetchone()
            conn.execute("COMMIT")
            return row[0]
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        winners = set(pool.map(insert, range(40)))
    assert len(winners) == 1


def test_launch_state_machine_and_recovery(store):
    receipt = accept(store)
    claimed = store.claim_next(now=2000.0).result()
    assert claimed.incident_id == receipt.incident_id
    assert (claimed.state, claimed.attempts) == ("launching", 1)
    assert store.claim_next(now=2000.0).result() is None  # claimed once only
    # A crash here leaves it "launching"; recovery makes it claimable again.
    assert store.recover().result() == 1
    again = store.claim_next(now=2001.0).result()
    assert (again.incident_id, again.attempts) == (receipt.incident_id, 2)
    store.finish(receipt.incident_id, state="launched").result()
    assert read_incidents(store.path)[0].state == "launched"
    assert store.recover().result() == 0


def test_a_failing_operation_fails_alone(store):
    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO dead_letters (source) VALUES ('x')")  # NOT NULL violations

    bad = store.submit(boom)
    good = store.dead_letter(source="s", reason="r", body=b"{}", body_sha256="0", received_at=1.0)
    assert good.result() >= 1
    with pytest.raises(sqlite3.IntegrityError):
        bad.result()
