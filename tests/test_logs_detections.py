"""Each detection fires on a crafted positive and stays quiet on a crafted negative;
findings carry source, line reference and timestamps. Every case runs through the
seeking block path and the full per-line scan, which must agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.logs import ReviewConfig, ReviewResult, Severity, Source, review
from tasks.logs.timestamps import parse_ns
from tests.plugins.logs import WINDOW, WriteLog, at

CONFIG = ReviewConfig(
    allowed_ip_ranges=["10.0.0.0/8", "2001:db8:1::/48"],
    tool_allowlist={"github": ["search_issues", "get_issue"]},
    expected_tunnel_locations=["ams", "fra08"],
)


def filler(hour: int, minutes: range, step: int = 20) -> list[str]:
    """Harmless proxy lines every ``step`` seconds (keeps gap rules quiet)."""
    return [
        f"{at(hour, m, s)} INFO request host=mcp.corp.example method=POST path=/mcp status=200 "
        f"remote=10.1.2.3:4000"
        for m in minutes
        for s in range(0, 60, step)
    ]


def steady(extra: dict[tuple[int, int], list[str]]) -> list[str]:
    """19:00-21:00 of filler with ``extra`` lines inserted at (hour, minute)."""
    lines: list[str] = []
    for hour in (19, 20):
        for minute in range(60):
            lines.extend(filler(hour, range(minute, minute + 1)))
            lines.extend(extra.get((hour, minute), []))
    return lines


def run(path: Path, config: ReviewConfig = CONFIG, **source: object) -> ReviewResult:
    """Reviews with seek and without, asserts both agree, returns the seek result."""
    sought = review([Source.from_file("stack", path, **source)], WINDOW, config)
    scanned = review([Source.from_file("stack", path, **source)], WINDOW, config, seek=False)
    assert sought.findings == scanned.findings
    assert sought.timeline == scanned.timeline
    assert sought.per_source["stack"].formats == scanned.per_source["stack"].formats
    return sought


def only(result: ReviewResult, rule_id: str) -> list:
    return [f for f in result.findings if f.rule_id == rule_id]


def line_at(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    return data[offset : data.index(b"\n", offset)]


def test_ip_validation_failure_fires_with_ip_ref_and_timestamps(write_log: WriteLog) -> None:
    bad = f"{at(20, 10, 5)} WARN IP validation failed: 203.0.113.7 is not a private address"
    again = f"{at(20, 40)} WARN IP validation failed: 203.0.113.7 is not a private address"
    path = write_log("proxy.log", steady({(20, 10): [bad], (20, 40): [again]}))
    [finding] = only(run(path), "LR001")
    assert finding.key == "203.0.113.7"
    assert finding.count == 2
    assert finding.severity is Severity.HIGH
    assert finding.source == "stack"
    assert finding.ref.artifact == str(path)
    assert line_at(path, finding.ref.offset) == bad.encode()
    assert finding.first_ns == parse_ns(at(20, 10, 5).encode())
    assert finding.last_ns == parse_ns(at(20, 40).encode())
    assert "203.0.113.7" in finding.sample and finding.rationale


def test_ip_validation_quiet_without_the_line(write_log: WriteLog) -> None:
    routes = [f"{at(20, 5)} INFO route configured host=a.example upstream=http://10.0.0.5:80"]
    result = run(write_log("proxy.log", steady({(20, 5): routes})))
    assert only(result, "LR001") == []
    assert result.findings == []


def test_ip_validation_outside_window_is_ignored(write_log: WriteLog) -> None:
    bad = f"{at(19, 30)} WARN IP validation failed: 203.0.113.7 is not a private address"
    assert only(run(write_log("proxy.log", steady({(19, 30): [bad]}))), "LR001") == []


def test_tls_handshake_failure(write_log: WriteLog) -> None:
    bad = f'{at(20, 1)} ERROR tls handshake failed remote=10.0.7.21:51240 error="bad certificate"'
    [finding] = only(run(write_log("p.log", steady({(20, 1): [bad]}))), "LR002")
    assert finding.key == "10.0.7.21" and finding.severity is Severity.MEDIUM
    quiet = f"{at(20, 1)} INFO tls server certificate loaded cert_file=/data/tls.crt"
    assert only(run(write_log("q.log", steady({(20, 1): [quiet]}))), "LR002") == []


def test_no_route_probe_by_host(write_log: WriteLog) -> None:
    probes = [
        f"{at(20, 2, s)} WARN no route for host host=admin.x.example remote=10.0.7.21:5"
        for s in range(3)
    ]
    [finding] = only(run(write_log("p.log", steady({(20, 2): probes}))), "LR003")
    assert finding.key == "admin.x.example" and finding.count == 3
    quiet = f"{at(20, 2)} INFO route configured host=admin.x.example upstream=http://10.0.0.5:80"
    assert only(run(write_log("q.log", steady({(20, 2): [quiet]}))), "LR003") == []


def test_request_outside_allowed_ranges_text_json_ipv6(write_log: WriteLog) -> None:
    lines = [
        f"{at(20, 3)} INFO request host=mcp.corp.example method=POST remote=198.51.100.9:4431",
        f'{at(20, 3, 30)} {{"time":"{at(20, 3, 30)}","level":"INFO","msg":"request",'
        f'"remote_addr":"198.51.100.10:443"}}',
        f"{at(20, 4)} INFO request method=POST remote=[2001:db8:2::7]:443",
        f"{at(20, 4, 30)} INFO request method=POST remote=[2001:db8:1::7]:443",
    ]
    found = {f.key: f for f in only(run(write_log("p.log", steady({(20, 3): lines}))), "LR004")}
    assert set(found) == {"198.51.100.9", "198.51.100.10", "2001:db8:2::7"}
    assert all(f.severity is Severity.HIGH for f in found.values())


def test_request_inside_ranges_or_no_ranges_configured_is_quiet(write_log: WriteLog) -> None:
    inside = [f"{at(20, 3)} INFO request host=mcp.corp.example remote=10.200.1.1:4431"]
    assert only(run(write_log("p.log", steady({(20, 3): inside}))), "LR004") == []
    outside = [f"{at(20, 3)} INFO request host=mcp.corp.example remote=198.51.100.9:4431"]
    path = write_log("q.log", steady({(20, 3): outside}))
    assert only(run(path, ReviewConfig()), "LR004") == []


def mcp_line(moment: str, params: str, server: str = "github") -> str:
    return (
        f'{moment} {{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{params},'
        f'"session_id":"s-1","server":"{server}"}}'
    )


def test_tool_outside_allowlist_is_critical(write_log: WriteLog) -> None:
    lines = [
        mcp_line(at(20, 5), '{"name":"delete_repo"}'),
        mcp_line(at(20, 5, 1), '{"name":"search_issues"}'),
    ]
    [finding] = only(run(write_log("mcp.log", steady({(20, 5): lines}))), "LR005")
    assert finding.key == "github/delete_repo"
    assert finding.severity is Severity.CRITICAL


def test_tool_allowlist_sees_through_escapes_and_decoy_arguments(write_log: WriteLog) -> None:
    lines = [
        # JSON escape: decodes to delete_repo
        mcp_line(at(20, 6), '{"name":"del\\u0065te_repo"}'),
        # an allowed name planted in the arguments before the real one
        mcp_line(at(20, 7), '{"arguments":{"name":"search_issues"},"name":"push_files"}'),
    ]
    found = {f.key for f in only(run(write_log("mcp.log", steady({(20, 6): lines}))), "LR005")}
    assert found == {"github/delete_repo", "github/push_files"}


def test_tool_allowlist_quiet_for_allowed_tools_and_unlisted_servers(write_log: WriteLog) -> None:
    lines = [
        mcp_line(at(20, 5), '{"name":"get_issue"}'),
        mcp_line(at(20, 5, 1), '{"name":"delete_repo"}', server="jira"),
    ]
    assert only(run(write_log("mcp.log", steady({(20, 5): lines}))), "LR005") == []


def test_tool_allowlist_uses_the_source_server_name(write_log: WriteLog) -> None:
    line = f'{at(20, 5)} {{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x"}}}}'
    path = write_log("mcp.log", steady({(20, 5): [line]}))
    [finding] = only(run(path, kind="mcp", mcp_server="github"), "LR005")
    assert finding.key == "github/x"
    # No server known: a tool no server may call is still flagged, under "?".
    [unknown] = only(run(path), "LR005")
    assert unknown.key == "?/x"


def test_rate_spike_against_baseline(write_log: WriteLog) -> None:
    burst = [f"{at(20, 30, i / 10)} INFO request method=POST remote=10.0.0.1:1" for i in range(400)]
    [finding] = only(run(write_log("p.log", steady({(20, 30): burst}))), "LR006")
    assert finding.count == 1
    assert finding.first_ns == parse_ns(at(20, 30).encode())
    assert "peak 403 lines" in finding.sample


def test_rate_steady_or_without_baseline_is_quiet(write_log: WriteLog) -> None:
    assert only(run(write_log("p.log", steady({}))), "LR006") == []
    burst = [f"{at(20, 30, i / 10)} INFO request remote=10.0.0.1:1" for i in range(400)]
    window_only = filler(20, range(60)) + burst
    window_only.sort()
    assert only(run(write_log("q.log", window_only)), "LR006") == []


def registered(moment: str, location: str) -> str:
    return (
        f"{moment} INF Registered tunnel connection connIndex=0 "
        f"connection=6f1c0e54-9a1d-4a52-9d8e-1f2e3d4c5b6a event=0 ip=198.41.200.13 "
        f"location={location} protocol=quic"
    )


def test_unexpected_tunnel_location(write_log: WriteLog) -> None:
    lines = [registered(at(20, 8), "ams01"), registered(at(20, 8, 1), "sin02")]
    [finding] = only(run(write_log("cf.log", steady({(20, 8): lines}))), "LR007")
    assert finding.key == "sin02" and finding.severity is Severity.HIGH


def test_expected_tunnel_locations_are_quiet_and_on_the_timeline(write_log: WriteLog) -> None:
    lines = [registered(at(20, 8), "ams01"), registered(at(20, 8, 1), "fra08")]
    result = run(write_log("cf.log", steady({(20, 8): lines})))
    assert only(result, "LR007") == []
    assert [e.what for e in result.timeline] == [
        "tunnel connection at ams01",
        "tunnel connection at fra08",
    ]


def test_gap_inside_window(write_log: WriteLog) -> None:
    lines = filler(19, range(60)) + filler(20, range(0, 20)) + filler(20, range(40, 60))
    [finding] = only(run(write_log("p.log", lines)), "LR008")
    assert finding.first_ns == parse_ns(at(20, 19, 40).encode())
    assert finding.last_ns == parse_ns(at(20, 40).encode())
    assert "20m20s" in finding.sample


def test_continuous_log_has_no_gap_or_truncation(write_log: WriteLog) -> None:
    result = run(write_log("p.log", steady({})))
    assert only(result, "LR008") == [] and only(result, "LR009") == []


def test_log_ending_early_is_truncation(write_log: WriteLog) -> None:
    lines = filler(19, range(60)) + filler(20, range(0, 30))
    [finding] = only(run(write_log("p.log", lines)), "LR009")
    assert finding.severity is Severity.HIGH
    assert finding.first_ns == parse_ns(at(20, 29, 40).encode())
    assert "before the window end" in finding.sample


def test_empty_window_is_truncation(write_log: WriteLog) -> None:
    [finding] = only(run(write_log("p.log", filler(19, range(60)))), "LR009")
    assert "no lines in the window" in finding.sample


def test_misconfiguration_lines_are_low(write_log: WriteLog) -> None:
    lines = [
        f"{at(20, 9)} ERROR invalid upstream (must be scheme://host:port)",
        f"{at(20, 9, 1)} ERROR open /data/tls.key: permission denied",
    ]
    found = {f.key: f for f in only(run(write_log("p.log", steady({(20, 9): lines}))), "LR012")}
    assert set(found) == {"invalid upstream", "permission denied"}
    assert all(f.severity is Severity.LOW for f in found.values())


def test_cloudflared_debug_secrets_never_reach_samples_or_timeline(write_log: WriteLog) -> None:
    canary = "canary-0123456789abcdef0123"
    lines = [
        f'{at(20, 11)} ERR request failed headers={{"Authorization":["Bearer {canary}"]}} '
        f"url=https://mcp.x.example/mcp?token={canary}",
        f"{at(20, 11, 1)} WARN IP validation failed: 203.0.113.9 is not a private address "
        f"headers=map[Cookie:[session={canary}]]",
    ]
    result = run(write_log("cf.log", steady({(20, 11): lines})))
    assert only(result, "LR001") and result.timeline
    texts = [f.sample for f in result.findings] + [e.text for e in result.timeline]
    assert all(canary not in t for t in texts)
    assert any("[REDACTED]" in t for t in texts)


def test_unknown_lines_are_counted_not_dropped(write_log: WriteLog) -> None:
    lines = [f"{at(20, 12)} goroutine 7 [running]:", "\tmain.main()", f"{at(20, 12, 1)} text"]
    path = write_log(
        "p.log", ["?? leading line nobody wrote a format for", *steady({(20, 12): lines})]
    )
    result = run(path)
    counts = result.per_source["stack"]
    # The leading undated line is unknown but kept (it takes the window start); the
    # stack frame joins the panic record before it; the dated free text is parsed.
    assert counts.unknown == 1
    assert counts.formats["go_panic"] == 2
    assert counts.formats["timestamped"] == 1
    assert counts.lines_in_window == sum(counts.formats.values())
    assert counts.parsed == counts.lines_in_window - 1
    [panic] = only(result, "LR023")
    assert "main.main()" in panic.sample


@pytest.mark.parametrize("seek", [True, False])
def test_needs_human_follows_severity(write_log: WriteLog, seek: bool) -> None:
    quiet = review([Source.from_file("s", write_log("a.log", steady({})))], WINDOW, CONFIG)
    assert not quiet.needs_human and "no findings" in quiet.summary()
    bad = [f"{at(20, 3)} INFO request remote=198.51.100.9:1"]
    loud = review(
        [Source.from_file("s", write_log("b.log", steady({(20, 3): bad})))],
        WINDOW,
        CONFIG,
        seek=seek,
    )
    assert loud.needs_human and "1 high" in loud.summary()


def test_tool_allowlist_on_key_value_mcp_lines(write_log: WriteLog) -> None:
    lines = [
        f"{at(20, 5)} INFO rpc method=tools/call tool=delete_repo server=github session=s-1",
        f"{at(20, 5, 1)} INFO rpc method=tools/call tool=get_issue server=github session=s-1",
        mcp_line(at(20, 5, 2), '{"name":"get_issue"}'),
    ]
    result = run(write_log("mcp.log", steady({(20, 5): lines})))
    assert [f.key for f in only(result, "LR005")] == ["github/delete_repo"]
    formats = result.per_source["stack"].formats
    assert formats["proxy_text"] + formats["timestamps/jsonrpc"] >= 3
