"""Lines named a block at a time (tasks/logs/block_names.py) get the names the
per-line check gives them.

:func:`name_lines` calls :func:`fast_name` once per distinct line shape (its payload's
first bytes with digits read as "0") instead of once per line; it must give the
same counts and the same lines to parse as :func:`name_each`, the per-line reference.
Material: every real excerpt in tests/fixtures/logs (sources in its SOURCES.md)
behind a collector's timestamp, ``docker logs --timestamps`` (one width) and
``podman logs -t`` (fraction trimmed: each line's own width); the generated corpus
of the benchmark; and lines made to defeat the shortcut (a shape decided past the
key, a syslog date only its digits make invalid, JSON whose stamp holds "jsonrpc").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.logs.block_names import _KEY, name_each, name_lines
from tasks.logs.block_scan import _LOUD, _MAX_HINTS
from tasks.logs.corpus import write_corpus
from tasks.logs.reader import iter_blocks, ordered_utc
from tasks.logs.rules import BLOCK_HINTS

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
BASE = datetime(2026, 11, 21, 20, tzinfo=UTC)


def _stamp(moment: datetime, trimmed: bool) -> bytes:
    fraction = f"{moment.microsecond:06d}000"
    if trimmed:
        fraction = fraction.rstrip("0")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")
    return text.encode() + b"Z "


def _block(payloads: list[bytes], trimmed: bool) -> bytes:
    step = timedelta(microseconds=137)
    return b"\n".join(
        _stamp(BASE + i * step, trimmed) + payload for i, payload in enumerate(payloads)
    )


def _agree(data: bytes) -> tuple[dict[str, int], list[int]]:
    """Both namings of one block, which must be ordered and dated (asserted)."""
    lines = data.split(b"\n")
    width = ordered_utc(lines, None)
    assert width and width != -1, data[:200]
    fast = name_lines(data, lines, width)
    assert fast == name_each(lines, width)
    return fast


@pytest.mark.parametrize("trimmed", [False, True], ids=["docker", "rfc3339nano"])
def test_every_real_excerpt_is_named_as_line_by_line(trimmed: bool) -> None:
    named: dict[str, int] = {}
    for fixture in sorted(FIXTURES.glob("*.log")):
        payloads = [x for x in fixture.read_bytes().split(b"\n") if x]
        if fixture.name == "go_panic_timestamped.log":  # already stamped: ours instead
            payloads = [x.split(b" ", 1)[1] for x in payloads]
        for name, count in _agree(_block(payloads, trimmed))[0].items():
            named[name] = named.get(name, 0) + count
    # The shortcut did name the real formats (not only left them to the parser).
    assert {
        "timestamps/cloudflared_text",
        "timestamps/cloudflared_json",
        "timestamps/claude_desktop",
        "timestamps/vscode_mcp",
        "timestamps/syslog/cloudflared_text",
    } <= set(named), named


def test_generated_corpus_blocks_are_named_as_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "stack.log"
    for trimmed in (False, True):
        write_corpus(path, 3 << 20, BASE.replace(hour=0), trimmed=trimmed)
        with open(path, "rb") as raw:
            blocks = list(iter_blocks(raw.read, 0, block_size=256 << 10))
        totals: dict[str, int] = {}
        for block in blocks:
            for name, count in _agree(block.data)[0].items():
                totals[name] = totals.get(name, 0) + count
        assert len(blocks) >= 10 and len(totals) >= 8, totals


def test_shapes_made_to_defeat_the_shortcut() -> None:
    long_tail = b"x" * (_KEY + 50)
    payloads = [
        # proxy words: plain, a tracing target only past the key, a tracing target
        b"INFO request host=a status=200 " + long_tail,
        b"INFO " + b"a" * (_KEY + 10) + b": done",
        b"INFO " + b"a" * (_KEY + 10) + b" done",
        b"WARN hyper_mcp::server{id=1}: slow",
        b"INFO request host=b status=500",
        # syslog: a valid date, and one invalid only by its digits (month 13)
        b"Nov 21 20:00:01 host cloudflared[7]: 2026-11-21T20:00:01Z INF Registered",
        b"Nov 21 20:00:01 host cloudflared[7]: 2026-13-21T20:00:01Z INF Registered",
        b"Nov 21 20:00:02 host cloudflared[7]: 2026-11-21T20:00:02Z INF Registered",
        # JSON: closed, closed after spaces, unclosed, long, jsonrpc, cloudflared
        b'{"level":"info","msg":"ok"}',
        b'{"level":"info","msg":"ok"}  \r',
        b'{"level":"info","msg":"cut',
        b'{"msg":"' + long_tail + b'"}',
        b'{"msg":"' + long_tail + b'"',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}',
        b'{"id":2,"jsonrpc":"2.0","method":"ping"}',
        # stamped payloads: cloudflared, Claude Desktop both orders, VS Code, near misses
        b"2026-11-21T20:00:01Z INF Registered tunnel connection",
        b"2026-11-21T20:00:01.123Z [info] [github] Message from client",
        b"2026-11-21T20:00:01.123Z [github] [error] Server disconnected",
        b"2026-11-21T20:00:01.123Z [" + b"s" * 130 + b"] [info] far",
        b"2026-11-21 20:00:01.577 [info] Connection state: Running",
        b"2026-11-21 20:00:01.577 [notice] something",
        b"2026-11-21T20:00:01Z XYZ not cloudflared",
        b"1" * (_KEY + 20),
        b"",
        b"INF plain cloudflared",
        b"Registered tunnel connection",
    ]
    for trimmed in (False, True):
        named, odd = _agree(_block(payloads * 3, trimmed))
        assert odd and named.get("proxy_text", 0) >= 6, (named, odd)
        assert named["timestamps/syslog/cloudflared_text"] == 6, named


def test_a_stamp_holding_jsonrpc_is_read_whole() -> None:
    """fast_name looks for "jsonrpc" in the whole line: a block whose stamps are not
    all of one shape (one holds a quoted "jsonrpc") is named line by line."""
    good = b"2026-11-21T20:00:00.000000001Z "
    odd = b'2026-11-21T20:00:00."jsonrpc"Z '
    assert len(good) == len(odd)
    payload = b'{"msg":"plain"}'
    data = b"\n".join([good + payload, odd + payload, good + payload])
    lines = data.split(b"\n")
    named, _ = name_lines(data, lines, len(good))
    assert (
        named
        == name_each(lines, len(good))[0]
        == {
            "timestamps/json": 2,
            "timestamps/jsonrpc": 1,
        }
    )


def test_block_literals_fit_the_packed_prefilter() -> None:
    assert len(BLOCK_HINTS) + len(_LOUD) <= _MAX_HINTS
