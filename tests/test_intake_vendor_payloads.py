"""Each vendor's own documented / published example payloads (tests/fixtures/intake,
sources in SOURCES.md there) through the parsers: what is fired, what is resolved,
what only updates, how many alerts one POST carries, and the dedup keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake.app import dedup_key
from intake.errors import PayloadSchemaError
from intake.formats import decode_body, parse_batch
from intake.models import Severity

FIXTURES = Path(__file__).parent / "fixtures" / "intake"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_bytes())


def test_alertmanager_group_is_one_alert_per_entry_keyed_by_fingerprint():
    batch = parse_batch("alertmanager", load("alertmanager/zulip_alert.json"))
    assert len(batch.alerts) == 2
    assert [a.alert_id for a in batch.alerts] == [
        "fingerprint:a1bc48475b20e73d",
        "fingerprint:c2ea85182f28cbd9",
    ]
    first = batch.alerts[0]
    assert first.status == "firing" and first.severity is Severity.critical
    assert first.title == "High CPU Temperature"
    assert first.description == "CPU core temperature is 34.75C"
    assert first.raw["labels"]["host"] == "andromeda" and first.raw["receiver"] == "ops-zulip"
    assert batch.truncated == 0


def test_alertmanager_without_fingerprint_and_its_resolution_share_keys():
    firing = parse_batch("alertmanager", load("alertmanager/alertmonitor_firing.json"))
    resolved = parse_batch("alertmanager", load("alertmanager/alertmonitor_resolved.json"))
    assert len(firing.alerts) == 3 and len(resolved.alerts) == 3
    assert {a.status for a in firing.alerts} == {"firing"}
    assert {a.status for a in resolved.alerts} == {"resolved"}
    assert [dedup_key(a) for a in firing.alerts] == [dedup_key(a) for a in resolved.alerts]
    assert len({dedup_key(a) for a in firing.alerts}) == 3
    assert firing.alerts[0].severity is Severity.high  # "major"


def test_alertmanager_truncated_alerts_are_reported():
    doc = load("alertmanager/zulip_alert.json")
    doc["truncatedAlerts"] = 7
    assert parse_batch("alertmanager", doc).truncated == 7
    doc["truncatedAlerts"] = -1
    with pytest.raises(PayloadSchemaError) as err:
        parse_batch("alertmanager", doc)
    assert err.value.field == "truncatedAlerts"


def test_grafana_unified_resolved_and_legacy():
    batch = parse_batch("grafana", load("grafana/alert_new_multiple.json"))
    assert [a.alert_id for a in batch.alerts] == [
        "fingerprint:c6eadffa33fcdf37",
        "fingerprint:bc97ff14869b13e3",
    ]
    assert [a.title for a in batch.alerts] == ["High memory usage", "High CPU usage"]
    [resolved] = parse_batch("grafana", load("grafana/alert-9-resolved.json")).alerts
    assert resolved.status == "resolved" and resolved.alert_id == "fingerprint:d8a21484c9c25a60"
    [legacy] = parse_batch("grafana", load("grafana/legacy_alert.json")).alerts
    assert (legacy.status, legacy.title, legacy.alert_id) == ("firing", "Test rule", "rule:0:0")
    ok = {**load("grafana/legacy_alert.json"), "state": "ok"}
    assert parse_batch("grafana", ok).alerts[0].status == "resolved"
    paused = {**load("grafana/legacy_alert.json"), "state": "paused"}
    assert parse_batch("grafana", paused).alerts[0].update_only


def test_pagerduty_triggered_resolved_and_updates():
    [triggered] = parse_batch("pagerduty", load("pagerduty/triggered_v3.json")).alerts
    assert (triggered.status, triggered.update_only) == ("firing", False)
    assert triggered.alert_id == "incident:PFQZPSY" and triggered.severity is Severity.high
    [resolved] = parse_batch("pagerduty", load("pagerduty/resolved_v3.json")).alerts
    assert resolved.status == "resolved" and resolved.alert_id == "incident:PCPZE64"
    [updated] = parse_batch("pagerduty", load("pagerduty/priority_updated_docs.json")).alerts
    assert updated.update_only and updated.event == "incident.priority_updated"
    assert updated.severity is Severity.critical  # P1


def test_splunk_payloads():
    [docs] = parse_batch("splunk", load("splunk/docs_example.json")).alerts
    assert docs.alert_id == "-:scheduler_admin_search_W2_at_14232356_132"
    [one] = parse_batch("splunk", load("splunk/search_one_result.json")).alerts
    assert one.alert_id == "sudo:rt_scheduler__admin__search__sudo_at_1483557185_2.2"
    assert one.title == "sudo" and one.status == "firing"
    assert one.occurred_at is not None and one.occurred_at.year == 2017


def test_azure_monitor_documented_sample_is_resolved():
    [alert] = parse_batch("azure-monitor", load("azure/sample_resolved_metric.json")).alerts
    assert alert.status == "resolved" and alert.severity is Severity.low  # Sev3
    assert alert.alert_id.endswith("aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e")
    assert alert.title == "WCUS-R2-Gen2"


# alertContext examples of Microsoft Learn "Sample alert payloads", one per
# monitoringService, each under the documented essentials (Fired).
SERVICE_CONTEXTS = {
    "Platform": {
        "conditionType": "SingleResourceMultipleMetricCriteria",
        "condition": {
            "windowSize": "PT5M",
            "allOf": [],
            "windowStartTime": "2019-03-22T13:40:03.064Z",
            "windowEndTime": "2019-03-22T13:45:03.064Z",
        },
    },
    "Log Analytics": {
        "SearchQuery": "Perf",
        "SearchIntervalStartTimeUtc": "3/22/2019 1:36:31 PM",
        "ResultCount": 2,
        "AlertType": "Metric measurement",
    },
    "Application Insights": {
        "SearchQuery": "requests",
        "ResultCount": 2,
        "ApplicationId": "00001111-aaaa-2222-bbbb-3333cccc4444",
    },
    "Log Alerts V2": {
        "conditionType": "LogQueryCriteria",
        "condition": {
            "windowSize": "PT10M",
            "allOf": [],
            "windowStartTime": "2020-07-07T13:54:34Z",
            "windowEndTime": "2020-07-09T13:54:34Z",
        },
    },
    "Activity Log - Administrative": {
        "authorization": {"action": "Microsoft.Compute/virtualMachines/restart/action"},
        "channels": "Operation",
        "status": "Succeeded",
    },
    "ServiceHealth": {"properties": {"title": "Azure Synapse Analytics Scheduled Maintenance"}},
    "Resource Health": {
        "properties": {"title": "Rebooted by user", "currentHealthStatus": "Unavailable"}
    },
    "Prometheus": {"interval": "PT1M", "expression": "sql_up > 0", "expressionValue": "0"},
}


@pytest.mark.parametrize("service", sorted(SERVICE_CONTEXTS))
def test_azure_monitor_every_monitoring_service(service):
    doc = load("azure/sample_resolved_metric.json")
    doc["data"]["essentials"].update(monitoringService=service, monitorCondition="Fired")
    doc["data"]["alertContext"] = SERVICE_CONTEXTS[service]
    [alert] = parse_batch("azure-monitor", doc).alerts
    assert alert.status == "firing"
    assert alert.raw["data"]["essentials"]["monitoringService"] == service
    if "windowStartTime" in json.dumps(SERVICE_CONTEXTS[service]):
        assert alert.window_start is not None and alert.window_start < alert.window_end


def test_sentinel_incident_new_active_closed():
    incident = {
        "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/w/providers/Microsoft.SecurityInsights/Incidents/73e01a99",
        "name": "73e01a99",
        "type": "Microsoft.SecurityInsights/Incidents",
        "properties": {
            "title": "MCP tunnel token used",
            "severity": "High",
            "status": "New",
            "incidentNumber": 3177,
            "createdTimeUtc": "2026-05-20T14:00:00Z",
        },
    }
    [new] = parse_batch("sentinel", {"object": incident, "workspaceId": "w"}).alerts
    assert (new.status, new.severity, new.update_only) == ("firing", Severity.high, False)
    incident["properties"]["status"] = "Active"
    assert parse_batch("sentinel", incident).alerts[0].update_only
    incident["properties"]["status"] = "Closed"
    assert parse_batch("sentinel", incident).alerts[0].status == "resolved"


def test_datadog_json_and_form_are_the_same_alert_and_recovery_resolves():
    raw = (FIXTURES / "datadog/extended_triggered.json").read_bytes()
    form = (FIXTURES / "datadog/extended_triggered.form").read_bytes()
    from_json = parse_batch("datadog", decode_body(raw, "application/json", "datadog")).alerts[0]
    from_form = parse_batch(
        "datadog", decode_body(form, "application/x-www-form-urlencoded", "datadog")
    ).alerts[0]
    assert from_json.alert_id == from_form.alert_id == "cycle:7395038829201840000"
    assert from_json.title == from_form.title and from_form.raw["org"]["id"] == "123456"
    [recovered] = parse_batch("datadog", load("datadog/extended_recovered.json")).alerts
    assert recovered.status == "resolved" and recovered.alert_id == from_json.alert_id
    no_cycle = {
        k: v for k, v in load("datadog/extended_triggered.json").items() if k != "alert_cycle_key"
    }
    assert parse_batch("datadog", no_cycle).alerts[0].alert_id == (
        "monitor:1234:availability-zone:us-east-1a, role:computing-node"
    )


def test_datadog_captured_notifications_default_and_custom_templates():
    # Real notifications (SOURCES.md): the stock default payload (no $ALERT_* field)
    # and a custom template naming $ALERT_TRANSITION ``transition``.
    [default] = parse_batch("datadog", load("datadog/relay_test_notification.json")).alerts
    assert (default.alert_id, default.status, default.severity) == (
        "event:5485379890863845239",
        "firing",
        None,  # the default payload carries no priority: the source's rule decides
    )
    assert default.title == "[Triggered] [TEST] Host Cluster Alert"
    assert default.occurred_at is not None and default.occurred_at.year == 2020
    assert default.raw["org"] == {"id": "415600", "name": "Puppet"}
    [custom] = parse_batch("datadog", load("datadog/inres_query_alert.json")).alerts
    assert (custom.alert_id, custom.status) == ("event:8306082202796025694", "firing")
    assert (custom.severity, custom.vendor_severity) == (Severity.critical, "P1")
    assert "audit.bytes" in (custom.description or "")
    recovered = dict(load("datadog/inres_query_alert.json"), title="[Recovered] High tracking")
    assert parse_batch("datadog", recovered).alerts[0].status == "resolved"


def test_azure_monitor_documented_log_alerts_v2_payload():
    [alert] = parse_batch("azure-monitor", load("azure/log_alerts_v2_fired.json")).alerts
    assert alert.status == "firing" and alert.title == "AcmeRule"
    assert alert.alert_id.endswith("/alerts/12345a-1234b-123c-123d-12345678e")
    assert (alert.severity, alert.vendor_severity) == (Severity.info, "Sev4")
    assert alert.raw["data"]["alertContext"]["conditionType"] == "LogQueryCriteria"


def test_elastic_kibana_and_watcher():
    [fired] = parse_batch("elastic", load("elastic/kibana_rule_action.json")).alerts
    [recovered] = parse_batch("elastic", load("elastic/kibana_rule_recovered.json")).alerts
    assert fired.status == "firing" and recovered.status == "resolved"
    assert fired.alert_id == recovered.alert_id
    assert fired.severity is Severity.critical
    [watch] = parse_batch("elastic", load("elastic/watcher_action.json")).alerts
    assert (watch.alert_id, watch.title, watch.severity) == (
        "watch:mcp_tunnel_errors",
        "MCP tunnel 5xx burst",
        Severity.high,
    )


def test_fields_mapping_keeps_unknown_fields_and_severity_map_translates():
    doc = {"alert": {"name": "MCP tunnel leak", "sev": "S1", "state": "CLOSED"}, "extra": [1, 2]}
    fields = {"title": "alert.name", "severity": "alert.sev", "status": "alert.state"}
    [alert] = parse_batch(
        "generic", doc, fields=fields, severity_map={"s1": Severity.critical}
    ).alerts
    assert (alert.title, alert.severity, alert.status) == (
        "MCP tunnel leak",
        Severity.critical,
        "resolved",
    )
    assert alert.raw["extra"] == [1, 2]
    with pytest.raises(PayloadSchemaError) as err:
        parse_batch("generic", {"alert": {"state": "x"}}, fields=fields)
    assert err.value.field == "alert.name"


label = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
grouped_alert = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": st.dictionaries(label, label, max_size=4),
    },
    optional={
        "fingerprint": st.text(alphabet="0123456789abcdef", min_size=1, max_size=16),
        "annotations": st.dictionaries(label, label, max_size=3),
        "startsAt": st.sampled_from(["2021-10-12T09:51:03.157076+02:00", "0001-01-01T00:00:00Z"]),
    },
)


@pytest.mark.parametrize("fmt", ["alertmanager", "grafana"])
@settings(max_examples=150, deadline=None)
@given(alerts=st.lists(grouped_alert, min_size=1, max_size=8), truncated=st.integers(0, 50))
def test_grouped_formats_one_alert_per_entry(fmt, alerts, truncated):
    doc = {"version": "4", "status": "firing", "alerts": alerts, "truncatedAlerts": truncated}
    try:
        batch = parse_batch(fmt, doc)
    except PayloadSchemaError as exc:
        assert exc.field.startswith("alerts.")  # only a bad startsAt may be refused
        return
    assert len(batch.alerts) == len(alerts) and batch.truncated == truncated
    for entry, alert in zip(alerts, batch.alerts, strict=True):
        assert alert.status == entry["status"]
        if "fingerprint" in entry:
            assert alert.alert_id == "fingerprint:" + entry["fingerprint"]


@settings(max_examples=150, deadline=None)
@given(
    event=st.sampled_from(
        [
            "incident.triggered",
            "incident.resolved",
            "incident.acknowledged",
            "incident.reopened",
            "incident.annotated",
            "service.updated",
            "x",
        ]
    )
)
def test_pagerduty_event_types_map_to_one_status(event):
    doc = load("pagerduty/triggered_v3.json")
    doc["event"]["event_type"] = event
    [alert] = parse_batch("pagerduty", doc).alerts
    assert alert.status == ("resolved" if event == "incident.resolved" else "firing")
    assert alert.update_only == (
        event not in ("incident.triggered", "incident.resolved", "incident.reopened")
    )


@settings(max_examples=150, deadline=None)
@given(
    transition=st.sampled_from(
        ["Triggered", "Recovered", "Re-Triggered", "Warn", "No Data", "Renotify"]
    ),
    body=st.binary(max_size=200),
)
def test_datadog_transitions_and_form_bytes(transition, body):
    doc = load("datadog/extended_triggered.json")
    doc["alert_transition"] = transition
    [alert] = parse_batch("datadog", doc).alerts
    assert alert.status == ("resolved" if transition == "Recovered" else "firing")
    try:
        decoded = decode_body(body, "application/x-www-form-urlencoded", "datadog")
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "MalformedPayload"
        return
    try:
        parse_batch("datadog", decoded)
    except PayloadSchemaError as exc:
        assert exc.field
