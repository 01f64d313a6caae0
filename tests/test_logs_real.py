"""The review on real log excerpts pasted into public issues (tests/fixtures/logs,
sources in SOURCES.md there): the parse rate of each format, every real failure
surfaced at medium or above, every healthy log quiet, and the rules that need the
deployment's expectations (edge locations, tool allowlist, clients) in every
format they appear in."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tasks.logs import ReviewConfig, ReviewResult, Severity, Source, review
from tasks.logs.batch import OPEN_END, OPEN_START
from tasks.logs.model import Window

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
EVERYTHING = Window(OPEN_START, OPEN_END)
OPEN = ReviewConfig(gap_threshold=0, baseline_period=0)

# Which format each fixture is an example of (the parse rate is measured per format
# over all of its fixtures: parsed lines / lines).
FORMATS = {
    "cloudflared_text": [
        "cloudflared_2021_kitchen.log",
        "cloudflared_2021_origin_eof.log",
        "cloudflared_2021_tls_edge_eof.log",
        "cloudflared_2022_panic.log",
        "cloudflared_2022_fallback.log",
        "cloudflared_2022_quic_churn.log",
        "cloudflared_2022_edge_dial_timeout.log",
        "cloudflared_2023_tls_edge_reset.log",
        "cloudflared_2024_origin_refused_dns.log",
        "cloudflared_2024_origin_timeout.log",
        "cloudflared_2024_edge_closed.log",
        "cloudflared_2025_healthy.log",
        "cloudflared_2025_no_ingress.log",
        "cloudflared_2026_remote_config.log",
    ],
    "cloudflared_json": [
        "cloudflared_2021_json_stopped.log",
        "cloudflared_2022_json_origin.log",
        "cloudflared_2022_json_churn.log",
    ],
    "logfmt": ["cloudflared_2020_logrus.log"],
    "syslog": ["cloudflared_2022_journald.log", "cloudflared_2025_journal_export.log"],
    "compose": ["cloudflared_2022_compose.log"],
    "timestamps": ["cloudflared_2025_truenas.log"],
    "addon": ["cloudflared_2022_addon_wrapper.log", "cloudflared_2022_addon.log"],
    "go_log": ["go_log_tls_handshake.log"],
    "mcp_proxy": ["mcp_proxy_tbxark.log"],
    "claude_desktop": [
        "claude_desktop_server_first.log",
        "claude_desktop_level_first.log",
        "claude_desktop_timeout.log",
        "claude_desktop_healthy.log",
        "claude_desktop_tools_call.log",
    ],
    "vscode_mcp": [
        "vscode_mcp_exited.log",
        "vscode_mcp_tools_call.log",
        "vscode_mcp_initialize.log",
        "vscode_mcp_stream.log",
    ],
    "jsonrpc": ["jsonrpc_bare.log"],
    "rust_tracing": ["rust_tracing_rmcp.log", "rust_tracing_hyper_mcp.log"],
    "env_logger": ["env_logger.log"],
}

# Real failures: the rule that must surface (at medium or above) for each.
FAILURES = {
    "cloudflared_2021_origin_eof.log": "origin-unreachable",
    "cloudflared_2021_tls_edge_eof.log": "edge-tls-failure",
    "cloudflared_2021_json_stopped.log": "fatal-shutdown",
    "cloudflared_2022_panic.log": "panic",
    "go_panic_timestamped.log": "panic",
    "cloudflared_2022_json_origin.log": "origin-unreachable",
    "cloudflared_2022_json_churn.log": "edge-connection-lost",
    "cloudflared_2022_fallback.log": "edge-connection-lost",
    "cloudflared_2022_quic_churn.log": "edge-connection-lost",
    "cloudflared_2022_edge_dial_timeout.log": "edge-connection-lost",
    "cloudflared_2023_tls_edge_reset.log": "edge-tls-failure",
    "cloudflared_2024_origin_refused_dns.log": "origin-unreachable",
    "cloudflared_2024_origin_timeout.log": "origin-unreachable",
    "cloudflared_2024_edge_closed.log": "edge-connection-lost",
    "cloudflared_2025_journal_export.log": "edge-connection-lost",
    "cloudflared_2025_no_ingress.log": "no-ingress-rules",
    "cloudflared_2025_truenas.log": "edge-tls-failure",
    "cloudflared_2026_remote_config.log": "ingress-changed-remotely",
    "claude_desktop_server_first.log": "mcp-server-disconnected",
    "claude_desktop_level_first.log": "mcp-server-disconnected",
    "claude_desktop_timeout.log": "request-timeout",
    "vscode_mcp_exited.log": "mcp-server-disconnected",
    "vscode_mcp_stream.log": "mcp-server-disconnected",
}
HEALTHY = [
    "cloudflared_2020_logrus.log",
    "cloudflared_2021_kitchen.log",
    "cloudflared_2022_journald.log",
    "cloudflared_2022_compose.log",
    "cloudflared_2022_addon_wrapper.log",
    "cloudflared_2022_addon.log",
    "cloudflared_2025_healthy.log",
    "claude_desktop_healthy.log",
    "claude_desktop_tools_call.log",
    "vscode_mcp_tools_call.log",
    "vscode_mcp_initialize.log",
    "rust_tracing_rmcp.log",
    "rust_tracing_hyper_mcp.log",
    "mcp_proxy_tbxark.log",
    "jsonrpc_bare.log",
]


def reviewed(name: str, config: ReviewConfig = OPEN, zone: str | None = None) -> ReviewResult:
    return review([Source(name=name, paths=[FIXTURES / name])], EVERYTHING, config, zone=zone)


def test_every_fixture_is_cited_in_sources_md() -> None:
    cited = (FIXTURES / "SOURCES.md").read_text()
    for path in FIXTURES.glob("*.log"):
        assert f"| {path.name} |" in cited, path.name
    assert set(FAILURES) | set(HEALTHY) <= {p.name for p in FIXTURES.glob("*.log")}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_parse_rate_per_format_is_at_least_95_percent(fmt: str) -> None:
    lines = parsed = 0
    seen: Counter[str] = Counter()
    for name in FORMATS[fmt]:
        counts = reviewed(name).per_source[name]
        raw = (FIXTURES / name).read_bytes().rstrip(b"\n").split(b"\n")
        assert counts.lines_in_window == len(raw), name  # nothing dropped, ever
        lines += counts.lines_in_window
        parsed += counts.parsed
        seen.update(
            {
                k.split("/")[-1] if "/" in k and fmt not in k else k: v
                for k, v in counts.formats.items()
            }
        )
    assert parsed / lines >= 0.95, (fmt, parsed, lines, seen)
    assert any(fmt in name for name in seen), seen


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_each_real_failure_surfaces_at_medium_or_above(name: str) -> None:
    result = reviewed(name)
    loud = {f.rule for f in result.findings if f.severity >= Severity.MEDIUM}
    assert FAILURES[name] in loud, [(f.rule, f.severity.label) for f in result.findings]


@pytest.mark.parametrize("name", HEALTHY)
def test_each_healthy_log_is_quiet(name: str) -> None:
    result = reviewed(name)
    assert [f for f in result.findings if f.severity >= Severity.MEDIUM] == []


def test_warning_lines_count() -> None:
    result = reviewed("cloudflared_2022_fallback.log")
    rules = {f.rule: f for f in result.findings}
    assert rules["quic-fallback"].severity == Severity.LOW
    # The multi-line WRN (two physical lines) is one record, not an unknown line.
    warning = rules["errors-and-warnings"]
    assert "If this log occurs persistently" in warning.sample and warning.count == 1
    counts = result.per_source["cloudflared_2022_fallback.log"]
    assert counts.unknown == 0 and counts.formats == {"cloudflared_text": 10}


def test_panic_with_its_stack_is_one_record() -> None:
    result = reviewed("cloudflared_2022_panic.log")
    [panic] = [f for f in result.findings if f.rule == "panic"]
    assert panic.count == 1 and panic.severity == Severity.HIGH
    assert "runtime/debug.Stack()" in panic.sample and "stack.go:24" in panic.sample
    counts = result.per_source["cloudflared_2022_panic.log"]
    assert counts.formats["go_panic"] == 13 and counts.unknown == 0


def test_reconnect_churn_as_a_rate_raises_edge_loss_to_high() -> None:
    name = "cloudflared_2022_edge_dial_timeout.log"  # 3 reconnects in 40 s
    calm = reviewed(name)
    churn = reviewed(name, ReviewConfig(gap_threshold=0, baseline_period=0, reconnect_churn=3))
    [before] = [f for f in calm.findings if f.rule == "edge-connection-lost"]
    [after] = [f for f in churn.findings if f.rule == "edge-connection-lost"]
    assert before.severity == Severity.MEDIUM and after.severity == Severity.HIGH
    assert "3 reconnects within 10m00s" in after.rationale


def test_graceful_restart_is_not_edge_loss() -> None:
    result = reviewed("cloudflared_2022_journald.log")
    assert {f.rule for f in result.findings} <= {"errors-and-warnings"}
    assert result.per_source["cloudflared_2022_journald.log"].formats == {
        "syslog": 3,
        "syslog/cloudflared_text": 8,
    }


@pytest.mark.parametrize(
    ("name", "seen"),
    [
        ("cloudflared_2021_origin_eof.log", {"SEA", "HKG"}),  # 2021 "Connection <id> registered"
        ("cloudflared_2021_kitchen.log", {"SEA", "LAX"}),  # 2021.1 "Connection established"
        ("cloudflared_2022_compose.log", {"ORD", "EWR"}),  # Compose prefix, 2022
        ("cloudflared_2022_addon.log", {"AMS"}),  # 2022 with ip=
        ("cloudflared_2024_edge_closed.log", {"lhr10", "lhr13"}),  # 2024 "Registered tunnel"
        ("cloudflared_2025_journal_export.log", {"mad03"}),  # journal prefix
        ("cloudflared_2026_remote_config.log", {"tpa01", "atl13", "mia10"}),
    ],
)
def test_unexpected_edge_locations_in_every_format(name: str, seen: set[str]) -> None:
    expected = ReviewConfig(gap_threshold=0, baseline_period=0, expected_tunnel_locations=["fra"])
    found = {f.key for f in reviewed(name, expected).findings if f.rule_id == "LR007"}
    assert found == seen
    assert all(
        f.severity == Severity.HIGH
        for f in reviewed(name, expected).findings
        if f.rule_id == "LR007"
    )
    allowed = ReviewConfig(
        gap_threshold=0, baseline_period=0, expected_tunnel_locations=sorted(seen)
    )
    assert [f for f in reviewed(name, allowed).findings if f.rule_id == "LR007"] == []


@pytest.mark.parametrize(
    ("name", "tool", "server"),
    [
        ("claude_desktop_tools_call.log", "get_forecast", "weather"),  # [level] [server]
        ("claude_desktop_tools_call.log", "get_alerts", "weather"),  # [server] [level]
        ("vscode_mcp_tools_call.log", "validate_username", "?"),  # [Client Says]
        ("jsonrpc_bare.log", "coder_workspace_exec", "?"),  # bare JSON-RPC
    ],
)
def test_tools_call_outside_the_allowlist_in_every_client_format(
    name: str, tool: str, server: str
) -> None:
    servers = ("weather",) if server == "weather" else ("github", "weather")
    narrow = ReviewConfig(
        gap_threshold=0, baseline_period=0, tool_allowlist={s: ["search_issues"] for s in servers}
    )
    critical = {f.key: f for f in reviewed(name, narrow).findings if f.rule_id == "LR005"}
    assert critical[f"{server}/{tool}"].severity == Severity.CRITICAL
    wide = ReviewConfig(
        gap_threshold=0,
        baseline_period=0,
        tool_allowlist={s: [tool, "get_alerts", "get_forecast"] for s in servers},
    )
    assert [f for f in reviewed(name, wide).findings if f.rule_id == "LR005"] == []


@pytest.mark.parametrize(
    ("name", "client"),
    [
        ("claude_desktop_server_first.log", "claude-ai"),
        ("claude_desktop_healthy.log", "claude-ai"),
        ("vscode_mcp_initialize.log", "Visual Studio Code"),
    ],
)
def test_initialize_from_an_unexpected_client(name: str, client: str) -> None:
    only_cursor = ReviewConfig(gap_threshold=0, baseline_period=0, expected_clients=["cursor"])
    [finding] = [f for f in reviewed(name, only_cursor).findings if f.rule_id == "LR022"]
    assert finding.key == client and finding.severity == Severity.HIGH
    allowed = ReviewConfig(gap_threshold=0, baseline_period=0, expected_clients=[client])
    assert [f for f in reviewed(name, allowed).findings if f.rule_id == "LR022"] == []


def test_zone_less_stamps_use_the_zone_and_are_counted() -> None:
    name = "vscode_mcp_exited.log"  # "2025-10-06 16:15:20.051 [error] …" (local time)
    utc = reviewed(name)
    berlin = reviewed(name, zone="Europe/Berlin")
    counts = berlin.per_source[name]
    assert counts.assumed_zone == 4 and counts.zone == "Europe/Berlin"
    [a] = [f for f in utc.findings if f.rule_id == "LR020"]
    [b] = [f for f in berlin.findings if f.rule_id == "LR020"]
    assert a.first_ns - b.first_ns == 2 * 3600 * 10**9  # CEST is UTC+2 in October
    # Zoned stamps are exact: nothing is assumed for them.
    assert (
        reviewed("cloudflared_2024_edge_closed.log")
        .per_source["cloudflared_2024_edge_closed.log"]
        .assumed_zone
        == 0
    )


def test_undated_leading_lines_are_kept_with_the_first_time() -> None:
    name = "claude_desktop_server_first.log"  # starts with the server's stderr line
    counts = reviewed(name).per_source[name]
    assert counts.lines_in_window == 11 and counts.unknown == 1
