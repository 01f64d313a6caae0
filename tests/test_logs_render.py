"""Parsers on the known line shapes, and the review's renderers."""

from __future__ import annotations

from tasks.logs import RULES, ReviewConfig, Source, review, to_markdown, to_table_rows
from tasks.logs.parsers import (
    CLOUDFLARED,
    MCP,
    PROXY_JSON,
    PROXY_TEXT,
    UNKNOWN,
    classify,
    kv_fields,
    mcp_call,
    normalize_ip,
    probed_host,
    refused_ip,
    remote_ip,
    strip_timestamp,
    tunnel_connection,
)
from tests.plugins.logs import WINDOW, WriteLog, at

REGISTERED = (
    b"2026-11-21T20:45:00Z INF Registered tunnel connection connIndex=0 "
    b"connection=6f1c0e54-9a1d-4a52-9d8e-1f2e3d4c5b6a event=0 ip=198.41.200.13 "
    b"location=ams01 protocol=quic"
)


def test_cloudflared_console_format() -> None:
    payload = strip_timestamp(b"2026-11-21T20:45:00.1Z " + REGISTERED)
    assert classify(payload) == CLOUDFLARED
    conn = tunnel_connection(payload)
    assert (conn.conn_index, conn.ip, conn.location, conn.protocol) == (
        "0",
        "198.41.200.13",
        "ams01",
        "quic",
    )
    fields = kv_fields(b'ERR failed error="dial udp: unreachable" connIndex=3')
    assert fields == {"error": "dial udp: unreachable", "connIndex": "3"}


def test_proxy_text_json_and_known_lines() -> None:
    assert classify(b"INFO route configured host=a upstream=http://10.0.0.5:80") == PROXY_TEXT
    assert classify(b'time=2026-11-21T20:00:00Z level=WARN msg="no route for host"') == PROXY_TEXT
    assert classify(b'{"time":"x","level":"ERROR","msg":"tls handshake failed"}') == PROXY_JSON
    assert refused_ip(b"WARN IP validation failed: 8.8.8.8 is not a private address") == "8.8.8.8"
    assert probed_host(b"WARN no route for host host=admin.x remote=1.2.3.4:5") == "admin.x"
    assert probed_host(b'{"msg":"no route for host","host":"db.x"}') == "db.x"
    assert remote_ip(b'{"remote_addr":"198.51.100.2:4431"}') == "198.51.100.2"
    assert remote_ip(b"remote=[2001:db8::5]:443") == "2001:db8::5"
    assert normalize_ip(b"010.1.1.1") is None and normalize_ip(b"300.1.1.1") is None


def test_mcp_jsonrpc_lines() -> None:
    line = (
        b'{"ts":"2026-11-21T20:00:00Z","session_id":"s-9","client_id":"agent-1","server":"gh",'
        b'"message":{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_issue"}},'
        b'"error":{"code":-32601,"message":"Method not found"}}'
    )
    assert classify(line) == MCP
    call = mcp_call(line)
    assert call is not None
    assert (call.method, call.tool, call.session, call.client, call.server, call.error) == (
        "tools/call",
        "get_issue",
        "s-9",
        "agent-1",
        "gh",
        "Method not found",
    )
    text = mcp_call(b"INFO rpc method=tools/call tool=run_shell session=s-2 status=ok")
    assert text is not None and (text.tool, text.status) == ("run_shell", "ok")
    assert classify(b"INFO rpc method=tools/call tool=run_shell") == MCP
    assert classify(b"panic: runtime error") == UNKNOWN


def test_table_rows_and_markdown(write_log: WriteLog) -> None:
    lines = [f"{at(20, m)} INFO request remote=10.0.0.1:1" for m in range(60)]
    lines.insert(
        10,
        f"{at(20, 9, 30)} WARN IP validation failed: 203.0.113.4 is not a private "
        "address | with a pipe",
    )
    path = write_log("proxy.log", lines)
    result = review([Source.from_file("proxy", path)], WINDOW, ReviewConfig())
    rows = to_table_rows(result)
    assert rows == [
        {
            "severity": "high",
            "rule": "LR001 ip-validation-failure",
            "source": "proxy",
            "key": "203.0.113.4",
            "count": 1,
            "first_seen": "2026-11-21T20:09:30.000000000Z",
            "last_seen": "2026-11-21T20:09:30.000000000Z",
            "line": f"{path}@{path.read_bytes().index(b'2026-11-21T20:09:30')}",
            "sample": lines[10],
        }
    ]
    markdown = to_markdown(result)
    assert "| high | LR001 ip-validation-failure | proxy | 203.0.113.4 | 1 |" in markdown
    assert "with a pipe" in markdown and "\\| with a pipe" in markdown
    assert RULES["LR001"].rationale in markdown
    assert "### Timeline (1 of 1 events)" in markdown
    assert "| proxy | yes |" in markdown or "| proxy | no |" in markdown
    assert result.summary().endswith("1 high; needs a human")


def test_every_rule_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "detections.md").read_text()
    for rule in RULES.values():
        assert f"## {rule.id} {rule.name}" in doc
        assert f"Severity: **{rule.severity.label}**" in doc
