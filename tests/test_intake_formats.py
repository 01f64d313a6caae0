"""Format parsers on the senders' documented payloads, rules, and property tests: no
input makes a parser (or the mapping after it) fail other than with a named error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.app import build_trigger, dedup_key
from intake.config import SourceConfig
from intake.errors import MalformedPayload, PayloadSchemaError, UnmappedAlert
from intake.formats import PARSERS, decode_json, parse_alert, parse_batch
from intake.models import Severity
from intake.rules import map_alert

# Splunk Alerting Manual, "Use a webhook alert action" (example payload).
SPLUNK = {
    "result": {"sourcetype": "mongod", "count": "8"},
    "sid": "scheduler_admin_search_W2_at_14232356_132",
    "results_link": "http://web.example.local:8000/app/search/@go?sid=scheduler_admin_search_W2_at_14232356_132",
    "search_name": None,
    "owner": "admin",
    "app": "search",
}
# Datadog Webhooks integration default payload, rendered, plus recommended variables.
DATADOG = {
    "body": "%%%\nTunnel token used from an unknown ASN\n%%%",
    "last_updated": "1700000100000",
    "event_type": "query_alert_monitor",
    "title": "[Triggered] MCP tunnel token anomaly",
    "date": "1700000000000",
    "org": {"id": "123456", "name": "Example"},
    "id": "7395038829201841000",
    "alert_id": "98765",
    "alert_cycle_key": "7395038829201840000",
    "alert_priority": "P1",
    "alert_transition": "Triggered",
    "alert_type": "error",
}
# PagerDuty V3 webhook, incident.triggered.
PAGERDUTY = {
    "event": {
        "id": "5ac64822-4adc-4fda-ade0-410becf0de4f",
        "event_type": "incident.triggered",
        "resource_type": "incident",
        "occurred_at": "2020-10-02T18:45:22.169Z",
        "agent": {"id": "PLH1HKV", "type": "user_reference"},
        "client": {"name": "PagerDuty"},
        "data": {
            "id": "PGR0VU2",
            "type": "incident",
            "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
            "number": 2,
            "status": "triggered",
            "incident_key": "d3640fbd41094207a1c11e58e46b1662",
            "title": "A little bump in the road",
            "urgency": "high",
            "priority": {"id": "PSO75BM", "type": "priority_reference", "summary": "P2"},
        },
    }
}
# Azure Monitor common alert schema (log search alert of a Sentinel workspace).
SENTINEL = {
    "schemaId": "azureMonitorCommonAlertSchema",
    "data": {
        "essentials": {
            "alertId": "/subscriptions/0000/providers/Microsoft.AlertsManagement/alerts/b9569717",
            "alertRule": "MCP tunnel token used outside allowed IPs",
            "severity": "Sev0",
            "signalType": "Log",
            "monitorCondition": "Fired",
            "monitoringService": "Log Alerts V2",
            "alertTargetIDs": ["/subscriptions/0000/resourcegroups/sec/workspaces/sentinel"],
            "originAlertId": "13cf7d86",
            "firedDateTime": "2026-05-20T14:00:00.1234567Z",
            "description": "Sign-ins with the tunnel token from a new country",
            "essentialsVersion": "1.0",
            "alertContextVersion": "1.0",
        },
        "alertContext": {"condition": {"windowSize": "PT5M"}},
    },
}


def test_splunk_documented_payload():
    alert = parse_alert("splunk", SPLUNK)
    assert alert.alert_id == "-:" + SPLUNK["sid"]  # search name (none) + sid
    assert alert.title.startswith("Splunk search ")
    assert alert.severity is None
    assert alert.link == SPLUNK["results_link"]
    assert alert.raw["owner"] == "admin"


def test_splunk_named_search_time_and_severity_from_result_row():
    hook = {
        **SPLUNK,
        "sid": "scheduler_admin_search_at_1700000000_7",
        "search_name": "MCP tunnel egress",
        "result": {"_time": "1700000123", "urgency": "critical"},
    }
    alert = parse_alert("splunk", hook)
    assert alert.title == "MCP tunnel egress"
    assert alert.severity is Severity.critical
    assert alert.occurred_at == datetime.fromtimestamp(1700000123, UTC)
    no_time = parse_alert("splunk", {**hook, "result": {}})
    assert no_time.occurred_at == datetime.fromtimestamp(1700000000, UTC)


def test_datadog_payload():
    alert = parse_alert("datadog", DATADOG)
    assert alert.alert_id == "cycle:7395038829201840000"
    assert alert.title == "[Triggered] MCP tunnel token anomaly"
    assert alert.severity is Severity.critical
    assert alert.occurred_at == datetime.fromtimestamp(1700000000, UTC)
    default_only = {
        k: DATADOG[k] for k in ("body", "last_updated", "event_type", "title", "date", "org", "id")
    }
    plain = parse_alert("datadog", default_only)
    assert plain.alert_id == "event:7395038829201841000"
    assert plain.severity is None
    assert (
        parse_alert("datadog", {**default_only, "alert_type": "warning"}).severity
        is Severity.medium
    )


def test_pagerduty_payload_and_later_events_share_the_incident():
    alert = parse_alert("pagerduty", PAGERDUTY)
    assert alert.alert_id == "incident:PGR0VU2"
    assert alert.title == "A little bump in the road"
    assert alert.severity is Severity.high  # P2
    assert alert.occurred_at == datetime(2020, 10, 2, 18, 45, 22, 169000, tzinfo=UTC)
    assert alert.link == "https://acme.pagerduty.com/incidents/PGR0VU2"
    acked = json.loads(json.dumps(PAGERDUTY))
    acked["event"].update(id="other-event", event_type="incident.acknowledged")
    assert dedup_key(parse_alert("pagerduty", acked)) == dedup_key(alert)
    urgent = json.loads(json.dumps(PAGERDUTY))
    urgent["event"]["data"]["priority"] = None
    urgent["event"]["data"]["urgency"] = "low"
    assert parse_alert("pagerduty", urgent).severity is Severity.low


def test_sentinel_common_alert_schema():
    alert = parse_alert("sentinel", SENTINEL)
    assert alert.alert_id == SENTINEL["data"]["essentials"]["alertId"]
    assert alert.title == "MCP tunnel token used outside allowed IPs"
    assert alert.severity is Severity.critical
    assert alert.occurred_at is not None and alert.occurred_at.year == 2026
    with pytest.raises(PayloadSchemaError) as err:
        parse_alert("sentinel", {**SENTINEL, "schemaId": "Microsoft.Insights/activityLogs"})
    assert err.value.field == "schemaId"


@pytest.mark.parametrize(
    ("fmt", "payload", "field"),
    [
        ("splunk", {"search_name": "x"}, "sid"),
        ("splunk", {"sid": "s", "result": [1]}, "result"),
        ("datadog", {"id": "1"}, "title"),
        ("datadog", {"id": "1", "title": "t", "date": "yesterday"}, "date"),
        ("pagerduty", {"event": {"id": "e", "event_type": "x", "occurred_at": "t"}}, "event.data"),
        ("sentinel", {"schemaId": "azureMonitorCommonAlertSchema", "data": {}}, "data.essentials"),
        (
            "generic",
            {
                "title": "t",
                "severity": "high",
                "window_start": "2026-01-02T00:00:00Z",
                "window_end": "2026-01-01T00:00:00Z",
            },
            "window_start",
        ),
        (
            "generic",
            {"title": "t", "severity": "high", "occurred_at": "2026-01-01T00:00:00"},
            "occurred_at",
        ),
    ],
)
def test_schema_errors_name_the_field(fmt, payload, field):
    with pytest.raises(PayloadSchemaError) as err:
        parse_alert(fmt, payload)
    assert err.value.field == field


RULED = SourceConfig.model_validate(
    {
        "format": "generic",
        "secrets_env": ["X"],
        "rules": [
            {
                "match": {"title": "MCP*", "raw.labels.env": "prod"},
                "target": "prod-eu",
                "window_before": "2h",
                "window_after": "10m",
            },
            {"match": {"severity": "critical"}, "target": "staging", "severity": "high"},
        ],
    }
)


def test_rules_first_match_window_and_containment():
    received = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    occurred = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    alert = parse_alert(
        "generic",
        {
            "title": "MCP tunnel",
            "severity": "medium",
            "occurred_at": occurred.isoformat(),
            "labels": {"env": "prod"},
        },
    )
    mapped = map_alert(alert, RULED, auto_contain_at=Severity.high, received_at=received)
    assert (mapped.target, mapped.rule_index, mapped.severity) == ("prod-eu", 0, Severity.medium)
    assert mapped.window_start == occurred - timedelta(hours=2)
    assert mapped.window_end == received  # later than occurred + 10 min
    assert mapped.auto_contain is False
    crit = parse_alert("generic", {"title": "Other", "severity": "critical"})
    second = map_alert(crit, RULED, auto_contain_at=Severity.high, received_at=received)
    assert (second.target, second.severity, second.auto_contain) == ("staging", Severity.high, True)
    with pytest.raises(UnmappedAlert, match="no rule matched"):
        map_alert(
            parse_alert("generic", {"title": "x", "severity": "low"}),
            RULED,
            auto_contain_at=Severity.high,
            received_at=received,
        )


def test_sender_window_wins_over_rule_window():
    received = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    alert = parse_alert(
        "generic",
        {
            "title": "MCP x",
            "severity": "high",
            "labels": {"env": "prod"},
            "window_start": "2026-01-01T08:00:00Z",
            "window_end": "2026-01-01T09:00:00Z",
        },
    )
    mapped = map_alert(alert, RULED, auto_contain_at=Severity.critical, received_at=received)
    assert mapped.window_start == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert mapped.window_end == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert mapped.auto_contain is False


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "empty"),
        (b"{", "line 1 column 2"),
        (b'{"a": Infinity}', "Infinity"),
        (b'"\\ud800"', "surrogate"),
        (b"[" * 100_000, "nested"),
        (b"\xc3\x28", "UTF-8"),
    ],
)
def test_decode_json_names_the_problem(body, problem):
    with pytest.raises(MalformedPayload) as err:
        decode_json(body)
    assert problem in err.value.detail


# ---- property tests -----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
time_like = (
    st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    | st.sampled_from(
        ["", "0", "99999999999999999", "2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
    )
)
field_value = json_values | time_like | st.sampled_from(["P1", "Sev0", "critical", "high", "MCP x"])

# Near-valid documents: the formats' own field names with arbitrary values, so the
# search reaches past the first "missing field" check.
SHAPES = {
    "generic": [
        "alert_id",
        "title",
        "severity",
        "occurred_at",
        "window_start",
        "window_end",
        "description",
        "link",
        "labels",
    ],
    "splunk": ["sid", "search_name", "app", "owner", "results_link", "result"],
    "datadog": [
        "id",
        "title",
        "body",
        "date",
        "last_updated",
        "event_type",
        "org",
        "alert_cycle_key",
        "alert_priority",
        "alert_type",
        "tags",
        "link",
    ],
    "pagerduty": ["event"],
    "sentinel": ["schemaId", "data", "id", "properties", "object"],
    "alertmanager": ["version", "groupKey", "truncatedAlerts", "status", "alerts", "commonLabels"],
    "grafana": ["alerts", "status", "ruleId", "ruleName", "state", "title", "orgId"],
    "azure-monitor": ["schemaId", "data"],
    "elastic": ["rule", "alert", "context", "date", "watch_id", "metadata", "severity"],
}
NESTED = {
    "pagerduty": lambda d: st.fixed_dictionaries(
        {},
        optional={
            "event": st.fixed_dictionaries(
                {},
                optional={
                    "id": field_value,
                    "event_type": field_value,
                    "occurred_at": time_like,
                    "resource_type": field_value,
                    "data": st.fixed_dictionaries(
                        {},
                        optional={
                            k: field_value
                            for k in [
                                "id",
                                "type",
                                "title",
                                "urgency",
                                "priority",
                                "incident",
                                "html_url",
                            ]
                        },
                    ),
                },
            ),
        },
    ),
    "sentinel": lambda d: st.fixed_dictionaries(
        {"schemaId": st.just("azureMonitorCommonAlertSchema") | field_value},
        optional={
            "data": st.fixed_dictionaries(
                {},
                optional={
                    "essentials": st.fixed_dictionaries(
                        {},
                        optional={
                            k: field_value
                            for k in [
                                "alertId",
                                "alertRule",
                                "severity",
                                "firedDateTime",
                                "description",
                                "alertTargetIDs",
                            ]
                        },
                    )
                },
            ),
        },
    ),
}


GENERIC = {
    "alert_id": "a-1",
    "title": "MCP tunnel",
    "severity": "high",
    "occurred_at": "2026-01-01T00:00:00+00:00",
    "labels": {"env": "prod"},
}
FIXTURES = Path(__file__).parent / "fixtures" / "intake"


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_bytes())


SAMPLES = {
    "generic": GENERIC,
    "splunk": SPLUNK,
    "datadog": DATADOG,
    "pagerduty": PAGERDUTY,
    "sentinel": SENTINEL,
    "alertmanager": _fixture("alertmanager/zulip_alert.json"),
    "grafana": _fixture("grafana/alert_new_multiple.json"),
    "azure-monitor": _fixture("azure/sample_resolved_metric.json"),
    "elastic": _fixture("elastic/kibana_rule_action.json"),
}
DELETE = object()


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    if not isinstance(node, dict):
        return [prefix]
    found = [prefix] if prefix else []
    for key, value in node.items():
        found += _paths(value, (*prefix, key))
    return found


def _apply(base: dict, edits: list[tuple[tuple, object]]) -> dict:
    doc = json.loads(json.dumps(base))
    for path, value in edits:
        node = doc
        for key in path[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(key), dict):
                break
            node = node[key]
        else:
            if value is DELETE:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return doc


def mutated(fmt: str) -> st.SearchStrategy:
    """The documented sample with up to three fields deleted or replaced."""
    edit = st.tuples(st.sampled_from(_paths(SAMPLES[fmt])), st.just(DELETE) | field_value)
    return st.lists(edit, max_size=3).map(lambda edits: _apply(SAMPLES[fmt], edits))


def documents(fmt: str) -> st.SearchStrategy:
    shaped = (
        NESTED[fmt](None)
        if fmt in NESTED
        else st.fixed_dictionaries({}, optional={k: field_value for k in SHAPES[fmt]})
    )
    return mutated(fmt) | shaped | json_values


ANY_RULE = SourceConfig.model_validate(
    {
        "format": "generic",
        "secrets_env": ["X"],
        "rules": [{"match": {}, "target": "t", "window_before": "2h", "window_after": "1h"}],
    }
)


def _exercise(fmt: str, doc: object) -> None:
    try:
        alert = parse_alert(fmt, doc)
    except PayloadSchemaError as exc:
        assert exc.field
        return
    assert alert.format == fmt and alert.title
    assert alert.status in ("firing", "resolved")
    batch = parse_batch(fmt, doc)
    assert len(batch.alerts) >= 1 and batch.truncated >= 0
    assert all(a.status in ("firing", "resolved") for a in batch.alerts)
    assert len({dedup_key(a) for a in batch.alerts}) <= len(batch.alerts)
    key = dedup_key(alert)
    assert key.startswith(("id:", "fp:"))
    try:
        mapped = map_alert(
            alert, ANY_RULE, auto_contain_at=Severity.high, received_at=datetime.now(UTC)
        )
    except UnmappedAlert:
        return
    assert mapped.window_start <= mapped.window_end
    json.dumps(build_trigger("s", mapped, key, "0" * 64, 1.0))
    alert.model_dump_json()


@pytest.mark.parametrize("fmt", sorted(PARSERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parsers_never_fail_unnamed(fmt, data):
    _exercise(fmt, data.draw(documents(fmt)))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_decode_or_are_named_malformed(body):
    for fmt in PARSERS:
        try:
            doc = decode_json(body)
        except MalformedPayload as exc:
            assert exc.detail.startswith("malformed JSON")
            return
        _exercise(fmt, doc)
