"""Every vendor's example payloads (tests/fixtures/intake, see SOURCES.md) sent byte
for byte to the real intake server, with the headers and the authentication each
sender really uses; resolved notifications, grouped alerts, correlation, observe
mode, vendor signatures and over-size bodies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from standardwebhooks.webhooks import Webhook

from core.trail import Trail
from intake.alerts_cli import list_alerts
from intake.auth import grafana_signature, pagerduty_signature

FIXTURES = Path(__file__).parent / "fixtures" / "intake"
SECRET = {
    "INTAKE_URL_TOKEN": "splunk-url-token-9f31c0d2a7",
    "INTAKE_BASIC_PASSWORD": "kibana-basic-pw-41aa",
    "INTAKE_PD_SIGNING": "pd-signing-secret-7c2e",
    "INTAKE_PD_SIGNING_OLD": "pd-signing-secret-old-11",
    "INTAKE_AM_BEARER": "am-bearer-token-55d1",
    "INTAKE_GRAFANA_HMAC": "grafana-hmac-secret-03b9",
    "INTAKE_SW_SECRET": "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode(),
    "INTAKE_DD_PASSWORD": "datadog-basic-pw-6e0f",
}
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://sts.windows.net/{TENANT}/"
AUDIENCE = "api://mcp-ir-intake"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rule(target: str = "prod-eu", **match: str) -> dict:
    return {"match": match, "target": target}


@pytest.fixture
def jwks(tmp_path):
    key = RSAKey.generate_key(2048, parameters={"kid": "entra-test-1"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key, path


@pytest.fixture
def vendors(make_intake_server, monkeypatch, jwks):
    for name, value in SECRET.items():
        monkeypatch.setenv(name, value)
    _, jwks_path = jwks
    sources = {
        "splunk": {
            "format": "splunk",
            "auth": "url-token",
            "secrets_env": ["INTAKE_URL_TOKEN"],
            "rules": [{"match": {}, "target": "prod-eu", "severity": "high"}],
        },
        "datadog": {
            "format": "datadog",
            "auth": "basic",
            "username": "datadog",
            "secrets_env": ["INTAKE_DD_PASSWORD"],
            "rules": [rule()],
        },
        "kibana": {
            "format": "elastic",
            "auth": "basic",
            "username": "kibana",
            "secrets_env": ["INTAKE_BASIC_PASSWORD"],
            "rules": [rule()],
        },
        "azure": {
            "format": "azure-monitor",
            "auth": "entra-id",
            "entra_id": {"jwks_file": str(jwks_path), "issuer": ISSUER, "audience": AUDIENCE},
            "rules": [rule()],
        },
        "pagerduty": {
            "format": "pagerduty",
            "auth": "pagerduty",
            "secrets_env": ["INTAKE_PD_SIGNING", "INTAKE_PD_SIGNING_OLD"],
            "rules": [rule(severity="*")],
        },
        "am": {
            "format": "alertmanager",
            "auth": "bearer",
            "secrets_env": ["INTAKE_AM_BEARER"],
            "signature_secrets_env": ["INTAKE_PD_SIGNING"],
            "rules": [rule()],
        },
        "grafana": {
            "format": "grafana",
            "auth": "grafana",
            "timestamp_header": "X-Grafana-Alerting-Timestamp",
            "secrets_env": ["INTAKE_GRAFANA_HMAC"],
            "rules": [{"match": {}, "target": "staging", "severity": "medium"}],
        },
        "sw": {
            "format": "generic",
            "auth": "standard-webhooks",
            "secrets_env": ["INTAKE_SW_SECRET"],
            "rules": [rule()],
        },
        "grafana-observe": {
            "format": "grafana",
            "auth": "bearer",
            "mode": "observe",
            "secrets_env": ["INTAKE_AM_BEARER"],
            "rules": [{"match": {}, "target": "staging", "severity": "high"}],
        },
    }
    return make_intake_server(intake={"dedup_window": "1h", "sources": sources})


def post(server, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=30)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def dd_headers(content_type: str = "application/json") -> dict[str, str]:
    """What Datadog's webhook sends: its body type and the configured basic auth."""
    return {
        "Content-Type": content_type,
        "Authorization": basic("datadog", SECRET["INTAKE_DD_PASSWORD"]),
    }


def post_pd(server, body: bytes, webhook_id: str) -> httpx.Response:
    """A PagerDuty V3 webhook delivery of ``body``, signed with the current secret."""
    return post(
        server,
        "/alerts/pagerduty",
        body,
        pd_headers(body, SECRET["INTAKE_PD_SIGNING"], webhook_id=webhook_id),
    )


def azure_headers(key: RSAKey) -> dict[str, str]:
    """What an Azure Monitor action group sends: JSON and an Entra ID bearer token."""
    return {
        "Content-Type": "application/json; charset=utf-8",
        "Authorization": "Bearer " + entra_token(key),
    }


def pd_headers(body: bytes, *secrets: str, webhook_id: str = "5ac64822-x") -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "PagerDuty-Webhook/V3.0",
        "X-PagerDuty-Signature": ",".join(pagerduty_signature(s.encode(), body) for s in secrets),
        "X-Webhook-Id": webhook_id,
        "X-Webhook-Subscription": "PY1OYTB",
    }


def entra_token(key: RSAKey, *, audience: str = AUDIENCE, expires_in: int = 600) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + expires_in,
        "appid": "461e8683-5575-4561-ac7f-899cc907d62a",
        "tid": TENANT,
    }
    return jwt.encode({"alg": "RS256", "kid": "entra-test-1", "typ": "JWT"}, claims, key)


def test_splunk_url_token_and_datadog_json_and_form(vendors):
    server = vendors
    body = fixture("splunk/search_one_result.json")
    headers = {"Content-Type": "application/json", "User-Agent": "Splunk/9.1"}
    opened = post(server, f"/alerts/splunk/{SECRET['INTAKE_URL_TOKEN']}", body, headers)
    assert opened.status_code == 202, opened.text
    assert post(server, "/alerts/splunk/not-the-token", body, headers).status_code == 401
    assert post(server, "/alerts/splunk", body, headers).status_code == 401
    # Datadog, another source, same target: joins the open incident, no second run.
    dd = fixture("datadog/extended_triggered.form")
    joined = post(
        server,
        "/alerts/datadog",
        dd,
        dd_headers("application/x-www-form-urlencoded"),
    )
    assert joined.status_code == 202, joined.text
    assert joined.json()["status"] == "joined"
    assert joined.json()["incident_id"] == opened.json()["incident_id"]
    server.launcher.wait_for_calls(1)
    recovered = post(
        server,
        "/alerts/datadog",
        fixture("datadog/extended_recovered.json"),
        dd_headers(),
    )
    assert recovered.json()["decision"] == "resolve"
    assert len(server.launcher.calls()) == 1


def test_captured_datadog_notifications_and_azure_log_alert_as_sent(vendors, jwks):
    # Real Datadog notifications (default payload, then a custom template) and the
    # documented complete Log Alerts V2 payload, byte for byte (SOURCES.md).
    server = vendors
    key, _ = jwks
    # The stock default payload has no priority: with a rule that sets none either,
    # it is kept as a dead letter (202), never dropped, and opens nothing.
    default = fixture("datadog/relay_test_notification.json")
    kept = post(server, "/alerts/datadog", default, dd_headers())
    assert kept.status_code == 202 and kept.json()["status"] == "dead_letter", kept.text
    assert "severity" in kept.json()["reason"]
    custom = fixture("datadog/inres_query_alert.json")
    opened = post(server, "/alerts/datadog", custom, dd_headers())
    assert (opened.status_code, opened.json()["decision"]) == (202, "open"), opened.text
    incident = opened.json()["incident_id"]
    again = post(server, "/alerts/datadog", custom, dd_headers())
    assert (again.status_code, again.json()["decision"]) == (200, "duplicate")
    assert again.json()["incident_id"] == incident
    azure = post(
        server,
        "/alerts/azure",
        fixture("azure/log_alerts_v2_fired.json"),
        azure_headers(key),
    )
    assert (azure.status_code, azure.json()["decision"]) == (202, "join"), azure.text
    rows = {r["alert_id"]: r for r in list_alerts(server.settings)}
    assert rows["event:8306082202796025694"]["severity"] == "critical"  # its P1
    assert rows["event:8306082202796025694"]["deliveries"] == 2
    [letter] = list_alerts(server.settings, dead_letter=True)
    assert letter["body_sha256"] == hashlib.sha256(default).hexdigest()
    assert (
        rows[
            json.loads(fixture("azure/log_alerts_v2_fired.json"))["data"]["essentials"]["alertId"]
        ]["incident_id"]
        == incident
    )
    assert len(server.launcher.wait_for_calls(1)) == 1


def test_resolved_notifications_never_open_an_incident(vendors, jwks):
    server = vendors
    key, _ = jwks
    pd = fixture("pagerduty/resolved_v3.json")
    answers = [
        post(server, "/alerts/pagerduty", pd, pd_headers(pd, SECRET["INTAKE_PD_SIGNING"])),
        post(
            server,
            "/alerts/azure",
            fixture("azure/sample_resolved_metric.json"),
            azure_headers(key),
        ),
        post(
            server,
            "/alerts/datadog",
            fixture("datadog/extended_recovered.json"),
            dd_headers(),
        ),
        post(
            server,
            "/alerts/kibana",
            fixture("elastic/kibana_rule_recovered.json"),
            {
                "Content-Type": "application/json",
                "Authorization": basic("kibana", SECRET["INTAKE_BASIC_PASSWORD"]),
            },
        ),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"incident_id": None, "status": "ignored", "decision": "ignore"}
    grafana = fixture("grafana/alert-9-resolved.json")
    ts = str(int(time.time()))
    g = post(
        server,
        "/alerts/grafana",
        grafana,
        {
            "Content-Type": "application/json",
            "X-Grafana-Alerting-Timestamp": ts,
            "X-Grafana-Alerting-Signature": grafana_signature(
                SECRET["INTAKE_GRAFANA_HMAC"].encode(), grafana, ts
            ),
        },
    )
    assert g.status_code == 200 and g.json()["alerts"][0]["decision"] == "ignore"
    time.sleep(0.5)
    assert server.launcher.calls() == []
    rows = list_alerts(server.settings)
    assert {r["status"] for r in rows} == {"resolved"}
    assert all(r["incident_id"] is None and r["decision"] == "ignore" for r in rows)


def test_pagerduty_lifecycle_resolve_is_recorded_in_the_open_incident(vendors, capsys):
    server = vendors
    triggered = fixture("pagerduty/triggered_v3.json")
    first = post(
        server,
        "/alerts/pagerduty",
        triggered,
        pd_headers(
            triggered,
            SECRET["INTAKE_PD_SIGNING_OLD"],
            SECRET["INTAKE_PD_SIGNING"],
            webhook_id="w-1",
        ),
    )
    assert first.status_code == 202, first.text
    incident = first.json()["incident_id"]
    # PagerDuty retries the same delivery: same X-Webhook-Id -> duplicate.
    retry = post_pd(server, triggered, "w-1")
    assert retry.json()["decision"] == "duplicate"
    [call] = server.launcher.wait_for_calls(1)
    assert call["trigger"]["status"] == "firing"
    # The run writes its first record (here: this test stands in for the run).
    Trail.open(server.settings.evidence_dir, incident).append(
        "incident.opened", None, {"incident_id": incident}
    )
    resolved = json.loads(fixture("pagerduty/resolved_v3.json"))
    resolved["event"]["data"]["id"] = "PFQZPSY"  # the resolution of the incident above
    body = json.dumps(resolved).encode()
    answer = post_pd(server, body, "w-2")
    assert answer.status_code == 200
    assert answer.json() == {"incident_id": incident, "status": "resolved", "decision": "resolve"}
    deadline = time.monotonic() + 10
    kinds: list[str] = []
    while "alert.resolved" not in kinds and time.monotonic() < deadline:
        kinds = [r.kind for r in Trail.open(server.settings.evidence_dir, incident).records()]
        time.sleep(0.1)
    assert "alert.resolved" in kinds
    assert len(server.launcher.calls()) == 1  # nothing more was launched
    import runbook.cli

    capsys.readouterr()
    code = runbook.cli.main(
        [
            "--config",
            str(server.settings.config_path),
            "--evidence-dir",
            str(server.settings.evidence_dir),
            "status",
            incident,
        ]
    )
    shown = capsys.readouterr().out
    assert code == 0
    assert "alert RESOLVED by the sender: 'Test Incident' from pagerduty" in shown
    update = fixture("pagerduty/priority_updated_docs.json")
    u = post_pd(server, update, "w-3")
    assert u.json()["decision"] == "ignore"


def test_wrong_pagerduty_signature_is_401_on_its_source_and_on_a_bearer_source(vendors):
    server = vendors
    body = fixture("pagerduty/triggered_v3.json")
    wrong = pd_headers(body, "not-the-secret")
    assert post(server, "/alerts/pagerduty", body, wrong).status_code == 401
    bearer = {**wrong, "Authorization": "Bearer " + SECRET["INTAKE_AM_BEARER"]}
    am = fixture("alertmanager/zulip_alert.json")
    assert (
        post(server, "/alerts/am", am, {**bearer, "X-PagerDuty-Signature": "v1=00"}).status_code
        == 401
    )
    assert (
        post(server, "/alerts/am", am, {"Authorization": bearer["Authorization"]}).status_code
        == 202
    )
    assert server.launcher.wait_for_calls(1)


def test_grouped_alertmanager_post_becomes_n_alerts(vendors):
    server = vendors
    body = fixture("alertmanager/alertmonitor_firing.json")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Alertmanager/0.27.0",
        "Authorization": "Bearer " + SECRET["INTAKE_AM_BEARER"],
    }
    answer = post(server, "/alerts/am", body, headers)
    assert answer.status_code == 202
    alerts = answer.json()["alerts"]
    assert [a["decision"] for a in alerts] == ["open", "join", "join"]
    assert len({a["incident_id"] for a in alerts}) == 1
    assert len({a["alert_id"] for a in alerts}) == 3
    assert len(server.launcher.wait_for_calls(1)) == 1
    rows = [r for r in list_alerts(server.settings) if r["source"] == "am"]
    assert len(rows) == 3
    doc = json.loads(fixture("alertmanager/zulip_alert.json"))
    doc["truncatedAlerts"] = 5
    again = post(server, "/alerts/am", json.dumps(doc).encode(), headers)
    assert again.json()["truncated_alerts"] == 5
    assert {
        r["truncated_alerts"]
        for r in list_alerts(server.settings)
        if r["alert_id"] == "fingerprint:a1bc48475b20e73d"
    } == {5}


def test_grafana_signature_with_timestamp_and_observe_mode(vendors):
    server = vendors
    body = fixture("grafana/alert_new_multiple.json")
    ts = str(int(time.time()))
    sig = grafana_signature(SECRET["INTAKE_GRAFANA_HMAC"].encode(), body, ts)
    headers = {"Content-Type": "application/json", "X-Grafana-Alerting-Timestamp": ts}
    assert (
        post(
            server, "/alerts/grafana", body, {**headers, "X-Grafana-Alerting-Signature": "ab" * 32}
        ).status_code
        == 401
    )
    stale = str(int(time.time()) - 3600)
    stale_sig = grafana_signature(SECRET["INTAKE_GRAFANA_HMAC"].encode(), body, stale)
    assert (
        post(
            server,
            "/alerts/grafana",
            body,
            {
                **headers,
                "X-Grafana-Alerting-Timestamp": stale,
                "X-Grafana-Alerting-Signature": stale_sig,
            },
        ).status_code
        == 401
    )
    observed = post(
        server,
        "/alerts/grafana-observe",
        body,
        {
            "Content-Type": "application/json",
            "Authorization": "Bearer " + SECRET["INTAKE_AM_BEARER"],
        },
    )
    assert observed.status_code == 200
    assert [a["decision"] for a in observed.json()["alerts"]] == ["open", "open"]
    time.sleep(0.3)
    assert server.launcher.calls() == []
    launched = post(
        server, "/alerts/grafana", body, {**headers, "X-Grafana-Alerting-Signature": sig}
    )
    assert [a["decision"] for a in launched.json()["alerts"]] == ["open", "join"]
    again = post(
        server,
        "/alerts/grafana-observe",
        body,
        {
            "Content-Type": "application/json",
            "Authorization": "Bearer " + SECRET["INTAKE_AM_BEARER"],
        },
    )
    assert [a["decision"] for a in again.json()["alerts"]] == ["duplicate", "duplicate"]
    rows = [r for r in list_alerts(server.settings) if r["source"] == "grafana-observe"]
    assert len(rows) == 2
    for row in rows:
        assert {
            "source",
            "status",
            "title",
            "severity",
            "alert_id",
            "decision",
            "incident_id",
        } <= set(row)
        assert row["mode"] == "observe" and row["incident_id"] is None
    assert len(server.launcher.wait_for_calls(1)) == 1


def test_entra_id_and_standard_webhooks(vendors, jwks):
    server = vendors
    key, _ = jwks
    doc = json.loads(fixture("azure/sample_resolved_metric.json"))
    doc["data"]["essentials"]["monitorCondition"] = "Fired"
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert (
        post(
            server,
            "/alerts/azure",
            body,
            {**headers, "Authorization": "Bearer " + entra_token(key, audience="api://other")},
        ).status_code
        == 401
    )
    assert (
        post(
            server,
            "/alerts/azure",
            body,
            {**headers, "Authorization": "Bearer " + entra_token(key, expires_in=-3600)},
        ).status_code
        == 401
    )
    other = RSAKey.generate_key(2048, parameters={"kid": "entra-test-1"})
    assert (
        post(
            server,
            "/alerts/azure",
            body,
            {**headers, "Authorization": "Bearer " + entra_token(other)},
        ).status_code
        == 401
    )
    ok = post(
        server, "/alerts/azure", body, {**headers, "Authorization": "Bearer " + entra_token(key)}
    )
    assert ok.status_code == 202, ok.text
    payload = json.dumps({"alert_id": "sw-1", "title": "MCP tunnel", "severity": "high"})
    signer = Webhook(SECRET["INTAKE_SW_SECRET"])
    now = datetime.now(UTC)
    sw_headers = {
        "Content-Type": "application/json",
        "webhook-id": "msg_2Lq3",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign("msg_2Lq3", now, payload),
    }
    assert post(server, "/alerts/sw", payload.encode(), sw_headers).json()["decision"] == "join"
    tampered = payload.replace("high", "low").encode()
    assert post(server, "/alerts/sw", tampered, sw_headers).status_code == 401


def test_over_size_body_is_dead_lettered_before_the_413(vendors):
    server = vendors
    secret_line = (
        "pasted by mistake: "
        + SECRET["INTAKE_DD_PASSWORD"]
        + " Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345"
    )
    body = (json.dumps({"title": "x", "note": secret_line}) + " " * 300_000).encode()
    answer = post(
        server,
        "/alerts/datadog",
        body,
        dd_headers(),
    )
    assert answer.status_code == 413
    letter_id = answer.json()["dead_letter_id"]
    [letter] = list_alerts(server.settings, dead_letter=True)
    assert letter["id"] == letter_id and letter["source"] == "datadog"
    assert letter["body_bytes"] == len(body)
    assert letter["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert len(letter["body"]) <= 2048 and letter["body"].startswith('{"title": "x"')
    assert SECRET["INTAKE_DD_PASSWORD"] not in letter["body"]
    assert "abcdefghijklmnopqrstuvwxyz012345" not in letter["body"]
    assert letter["meta"]["content_type"] == "application/json"
    assert "larger than" in letter["reason"]


def test_hmac_of_the_body_alone_is_not_a_pagerduty_signature_for_another_secret():
    body = b'{"event": {}}'
    assert (
        pagerduty_signature(b"a", body) == "v1=" + hmac.new(b"a", body, hashlib.sha256).hexdigest()
    )
