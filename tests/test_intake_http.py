"""SIEM intake over real HTTP: a uvicorn server, httpx clients, the SQLite store and a
recording launcher at the launch boundary."""

from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.errors import ConfigError, TransientError
from intake.alerts_cli import list_alerts
from intake.auth import sign
from tests.plugins.intake import SECRETS, RecordingLauncher

INCIDENT_ID = re.compile(r"^INC-\d{8}-\d{6}-[0-9a-f]{4}$")


def generic(title: str = "MCP tunnel token seen in the wild", **extra: object) -> dict:
    return {"alert_id": "gen-1", "title": title, "severity": "critical", **extra}


def test_healthz(make_intake_server):
    server = make_intake_server()
    response = httpx.get(f"{server.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "launch_backlog": {
            "new": 0,
            "launching": 0,
            "retrying": 0,
            "failed": 0,
            "awaiting_first_record": 0,
        },
    }


def test_new_alert_is_stored_then_launched_once_with_mapping(make_intake_server):
    server = make_intake_server()
    occurred = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    response = server.post("generic-src", generic(occurred_at=occurred.isoformat()))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert INCIDENT_ID.match(body["incident_id"])

    calls = server.launcher.wait_for_calls(1)
    assert len(calls) == 1
    call = calls[0]
    assert call["incident_id"] == body["incident_id"]
    assert call["target"] == "prod-eu"
    assert call["playbook"] == "breach-response"
    assert call["initiator"] == "alert:generic-src"
    assert call["severity"] == "critical"
    assert call["window_start"] == (occurred - timedelta(hours=2)).isoformat()
    trigger = call["trigger"]
    assert trigger["auto_contain"] is True
    assert (trigger["source"], trigger["alert_id"], trigger["severity"]) == (
        "generic-src",
        "gen-1",
        "critical",
    )
    assert trigger["title"] == "MCP tunnel token seen in the wild"
    assert trigger["incident_id"] == body["incident_id"]

    deadline = time.monotonic() + 5
    while list_alerts(server.settings)[0]["state"] != "launched" and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = list_alerts(server.settings)
    assert row["state"] == "launched"
    assert row["incident_id"] == body["incident_id"]
    assert row["deliveries"] == 1


def test_duplicate_alert_answers_200_with_the_same_incident(make_intake_server):
    server = make_intake_server()
    first = server.post("generic-src", generic())
    second = server.post("generic-src", generic())
    # The same alert signed with the next secret (rotation) is still the same alert.
    third = server.post("generic-src", generic(), secret_env="INTAKE_TEST_SECRET_NEXT")
    assert first.status_code == 202
    assert (second.status_code, third.status_code) == (200, 200)
    assert second.json() == {
        "incident_id": first.json()["incident_id"],
        "status": "duplicate",
        "decision": "duplicate",
    }
    assert third.json()["incident_id"] == first.json()["incident_id"]
    server.launcher.wait_for_calls(1)
    time.sleep(0.3)
    assert len(server.launcher.calls()) == 1
    [row] = list_alerts(server.settings)
    assert row["deliveries"] == 3


def test_alert_without_id_is_deduplicated_by_fingerprint(make_intake_server):
    server = make_intake_server()
    payload = {"title": "MCP tunnel anomaly", "severity": "high", "labels": {"host": "a"}}
    first = server.post("generic-src", payload)
    again = server.post("generic-src", payload)
    other = server.post("generic-src", {**payload, "labels": {"host": "b"}})
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert again.json()["incident_id"] == first.json()["incident_id"]
    # A different alert (its own fingerprint) for the same target joins the open
    # incident instead of starting a second run.
    assert other.json()["status"] == "joined"
    assert other.json()["incident_id"] == first.json()["incident_id"]
    keys = {(r["alert_id"], r["decision"]) for r in list_alerts(server.settings)}
    assert keys == {(None, "duplicate"), (None, "join")}


def test_fifty_concurrent_identical_alerts_make_one_incident(make_intake_server):
    server = make_intake_server()
    body = json.dumps(generic(alert_id="storm-1")).encode()

    def send(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            return server.post("generic-src", body, client=client)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [202]
    assert len({r.json()["incident_id"] for r in responses}) == 1
    server.launcher.wait_for_calls(1)
    time.sleep(0.5)
    assert len(server.launcher.calls()) == 1
    [row] = list_alerts(server.settings)
    assert row["deliveries"] == 50


def _signed(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "X-MCP-IR-Timestamp": str(ts),
        "X-MCP-IR-Signature": sign(secret.encode(), ts, body),
        "Content-Type": "application/json",
    }


MARKER = "BODY-MARKER-5f2e"
GOOD = json.dumps(generic(description=MARKER)).encode()
SECRET = SECRETS["INTAKE_TEST_SECRET"]


def _bad_requests() -> list[tuple[str, str, bytes, dict[str, str], int]]:
    """(case, source, body, headers, expected status). Headers are built at call time
    by the test (timestamps must be fresh), so the ``ts`` entries are offsets."""
    return [
        ("unknown source", "nope", GOOD, {"ts": "0"}, 404),
        ("no signature", "generic-src", GOOD, {"omit": "sig"}, 401),
        ("no timestamp", "generic-src", GOOD, {"omit": "ts"}, 401),
        ("wrong secret", "generic-src", GOOD, {"secret": "not-the-secret-123"}, 401),
        ("body changed after signing", "generic-src", GOOD, {"tamper": "1"}, 401),
        ("stale timestamp", "generic-src", GOOD, {"ts": "-301"}, 401),
        # 330 s, not 301: on a loaded machine the request may take seconds to arrive
        ("future timestamp", "generic-src", GOOD, {"ts": "330"}, 401),
        ("timestamp not a number", "generic-src", GOOD, {"ts_text": "12ab"}, 401),
        ("bearer on an hmac source", "generic-src", GOOD, {"bearer": SECRET}, 401),
        ("hmac on a bearer source", "token-src", GOOD, {}, 401),
        ("wrong bearer token", "token-src", GOOD, {"bearer": "wrong-token-xyz"}, 401),
        ("declared body too large", "generic-src", b"{" + b" " * (256 * 1024) + b"}", {}, 413),
        ("malformed JSON", "generic-src", b'{"title": "MCP tunnel' + MARKER.encode(), {}, 400),
        ("NaN is not JSON", "generic-src", b'{"title": NaN}', {}, 400),
        ("not UTF-8", "generic-src", b'{"title": "\xff\xfe"}', {}, 400),
        (
            "schema: bad severity",
            "generic-src",
            json.dumps(generic(severity="apocalyptic", description=MARKER)).encode(),
            {"field": "severity"},
            422,
        ),
        (
            "schema: unknown field",
            "generic-src",
            json.dumps(generic(colour="red", description=MARKER)).encode(),
            {"field": "colour"},
            422,
        ),
        ("schema: not an object", "generic-src", b"[1, 2, 3]", {"field": "body"}, 422),
    ]


@pytest.mark.parametrize(
    ("source", "body", "spec", "status"),
    [case[1:] for case in _bad_requests()],
    ids=[case[0] for case in _bad_requests()],
)
def test_each_bad_input_gets_its_status_starts_nothing_and_logs_no_secret(
    make_intake_server, caplog, source, body, spec, status
):
    server = make_intake_server()
    secret = spec.get("secret", SECRET)
    now = int(time.time()) + int(spec.get("ts", "0"))
    headers = _signed(secret, body, now)
    if "ts_text" in spec:
        headers["X-MCP-IR-Timestamp"] = spec["ts_text"]
    if spec.get("omit") == "sig":
        del headers["X-MCP-IR-Signature"]
    if spec.get("omit") == "ts":
        del headers["X-MCP-IR-Timestamp"]
    if "bearer" in spec:
        headers = {"Authorization": f"Bearer {spec['bearer']}"}
    sent = body + b" " if "tamper" in spec else body

    with caplog.at_level(logging.INFO, logger="mcp_ir.intake"):
        response = httpx.post(f"{server.url}/alerts/{source}", content=sent, headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json() == {"error": "unauthorized"}
    if status in (400, 422):
        assert response.json()["error"]
    if status == 422:
        assert response.json()["field"] == spec["field"]
    for secret_value in SECRETS.values():
        assert secret_value not in response.text
    assert MARKER not in response.text

    assert list_alerts(server.settings) == []
    time.sleep(0.2)
    assert server.launcher.calls() == []

    refusals = [r for r in caplog.records if r.getMessage().startswith("alert refused")]
    assert len(refusals) == 1
    assert f"status={status}" in refusals[0].getMessage()
    logged = caplog.text
    assert MARKER not in logged
    for secret_value in SECRETS.values():
        assert secret_value not in logged


def test_schema_error_names_the_field(make_intake_server):
    server = make_intake_server()
    response = server.post("generic-src", {"title": "MCP tunnel x", "severity": "high", "x": 1})
    assert response.status_code == 422
    assert response.json()["field"] == "x"
    missing = server.post("generic-src", {"severity": "high"})
    assert missing.status_code == 422
    assert missing.json()["field"] == "title"
    pd = server.post("pagerduty", {"event": {"id": "E1", "event_type": "incident.triggered"}})
    assert pd.status_code == 422
    assert pd.json()["field"] == "event.occurred_at"


def test_malformed_json_names_the_problem(make_intake_server):
    server = make_intake_server()
    response = server.post("generic-src", b'{"title": "x",}')
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]
    assert "line 1 column" in response.json()["error"]


def test_streamed_body_over_the_limit_is_refused_while_reading(make_intake_server):
    server = make_intake_server()
    chunk = b" " * 65536

    def body():  # no Content-Length: chunked transfer encoding
        yield b'{"title": "MCP tunnel", "pad": "'
        for _ in range(8):
            yield chunk
        yield b'"}'

    headers = {"X-MCP-IR-Timestamp": str(int(time.time())), "X-MCP-IR-Signature": "v1=00"}
    response = httpx.post(f"{server.url}/alerts/generic-src", content=body(), headers=headers)
    assert response.status_code == 413
    assert list_alerts(server.settings) == []


def test_body_at_the_limit_is_accepted(make_intake_server):
    server = make_intake_server()
    payload = generic(description="")
    raw = json.dumps(payload).encode()
    pad = 256 * 1024 - len(raw)
    payload["description"] = "d" * pad
    body = json.dumps(payload).encode()
    assert len(body) == 256 * 1024
    # The generic schema caps description at 10 000 characters: the answer is the
    # schema's 422, not 413, which shows the limit let the whole body through.
    response = server.post("generic-src", body)
    assert response.status_code == 422
    assert response.json()["field"] == "description"


def test_bearer_source_accepts_its_token_only(make_intake_server):
    server = make_intake_server()
    body = json.dumps({"title": "anything", "severity": "medium"}).encode()
    token = SECRETS["INTAKE_BEARER_TOKEN"]
    ok = httpx.post(
        f"{server.url}/alerts/token-src",
        content=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 202
    calls = server.launcher.wait_for_calls(1)
    assert calls[0]["target"] == "staging"
    assert calls[0]["trigger"]["auto_contain"] is False


def test_unmapped_alert_goes_to_dead_letter_never_dropped(make_intake_server):
    server = make_intake_server()
    payload = {"alert_id": "x-9", "title": "Disk almost full", "severity": "high"}
    response = server.post("generic-src", payload)
    assert response.status_code == 202
    assert response.json()["status"] == "dead_letter"
    assert "no rule matched" in response.json()["reason"]
    assert list_alerts(server.settings) == []
    [letter] = list_alerts(server.settings, dead_letter=True)
    assert letter["source"] == "generic-src"
    assert "no rule matched" in letter["reason"]
    assert "Disk almost full" in letter["body"]
    time.sleep(0.2)
    assert server.launcher.calls() == []


def test_authenticated_but_invalid_body_is_kept_in_dead_letter(make_intake_server):
    server = make_intake_server()
    response = server.post("generic-src", {"title": "MCP tunnel", "severity": "loud"})
    assert response.status_code == 422
    [letter] = list_alerts(server.settings, dead_letter=True)
    assert letter["reason"].startswith("severity:")


def test_rule_without_severity_and_alert_without_one_is_dead_lettered(make_intake_server):
    server = make_intake_server()
    hook = {"sid": "rt_1", "search_name": "MCP tunnel egress", "app": "search", "result": {}}
    intake = {
        "sources": {
            "splunk-prod": {
                "format": "splunk",
                "secrets_env": ["INTAKE_SPLUNK_SECRET"],
                "rules": [{"match": {"title": "MCP*"}, "target": "prod-eu"}],
            }
        }
    }
    strict = make_intake_server(intake=intake)
    response = strict.post("splunk-prod", hook)
    assert response.status_code == 202
    assert response.json()["status"] == "dead_letter"
    assert "severity" in response.json()["reason"]
    # The configured rule of the default inventory sets one: same payload, an incident.
    assert server.post("splunk-prod", hook).status_code == 202


def test_severity_below_threshold_is_not_auto_contained(make_intake_server):
    server = make_intake_server()
    payload = {"alert_id": "s-1", "title": "MCP tunnel latency", "severity": "medium"}
    assert server.post("generic-src", payload).status_code == 202
    [call] = server.launcher.wait_for_calls(1)
    assert call["trigger"]["auto_contain"] is False
    assert call["severity"] == "medium"


def _launch_fails_once(make_intake_server, path: Path, error: Exception):
    """An intake server whose launcher raises ``error`` on its first call."""
    launcher = RecordingLauncher(path, fail_first=1, fail_with=lambda: error)
    return make_intake_server(launcher=launcher), launcher


def _row_once(server, state: str) -> dict:
    """The one incident row, once it reaches ``state`` (or after 5 s)."""
    deadline = time.monotonic() + 5
    while list_alerts(server.settings)[0]["state"] != state and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = list_alerts(server.settings)
    return row


def test_retryable_launch_failure_is_retried_then_launched(make_intake_server, tmp_path):
    server, launcher = _launch_fails_once(
        make_intake_server, tmp_path / "flaky.sqlite", TransientError("prefect API answered 503")
    )
    response = server.post("generic-src", generic())
    assert response.status_code == 202
    calls = launcher.wait_for_calls(1, timeout_s=20)
    assert [c["incident_id"] for c in calls] == [response.json()["incident_id"]]
    row = _row_once(server, "launched")
    assert (row["state"], row["attempts"]) == ("launched", 2)
    assert row["last_error"] is None


def test_terminal_launch_failure_is_recorded_not_lost(make_intake_server, tmp_path):
    server, launcher = _launch_fails_once(
        make_intake_server,
        tmp_path / "broken.sqlite",
        ConfigError("target prod-eu: compose.data_dir does not exist"),
    )
    assert server.post("generic-src", generic()).status_code == 202
    row = _row_once(server, "failed")
    assert row["state"] == "failed"
    assert "compose.data_dir" in row["last_error"]
    assert launcher.calls() == []
