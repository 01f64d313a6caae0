"""Formats named per line without parsing, for blocks wholly in the window.

Every line of such a block starts with a ``Z`` timestamp (checked by
:func:`.reader.ordered_utc`), so the common payload shapes behind it can be told
apart by a few byte checks: :func:`fast_name` gives the name
:class:`~.formats.LineParser` would give, or None (the caller then parses the line).

:func:`name_lines` does the same for a whole block with one Python call per distinct
line shape instead of one per line (the per-line call was about a third of the
review's time on the benchmark's gigabyte); tests/test_logs_names.py checks that
both give the same names on every real excerpt, the generated corpus and shapes
made to defeat the shortcut.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import compress, repeat

from .formats import _SYSLOG

_CF_HEADS = frozenset((b"INF ", b"WRN ", b"ERR ", b"DBG ", b"FTL ", b"TRC "))
_PROXY_WORDS = frozenset(
    (b"INFO", b"WARN", b"WARNING", b"ERROR", b"ERRO", b"DEBUG", b"DEBU", b"FATAL", b"FATA")
    + (b"TRACE", b"NOTICE")
)
_TRACING_TARGET = re.compile(rb" +[\w:<>\-.]+(?:\{[^}\n]*\})?:")
_MONTHS = frozenset(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov")
    + (b"Dec",)
)
# A cloudflared text line with a valid UTC stamp (a subset of what the parser accepts:
# anything else is parsed line by line).
_CF_STAMPED = re.compile(
    rb"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    rb"(?:\.\d{1,9})?Z (?:INF|WRN|ERR|DBG|FTL|TRC) "
)
_CLIENT_LEVELS = frozenset((b"info", b"error", b"warn", b"warning", b"debug", b"trace"))


def _stamped_name(line: bytes, width: int) -> str | None:
    """A payload that starts with its own timestamp: cloudflared text, a Claude
    Desktop line (zoned stamp, ``[a] [b]``) or a VS Code line (zone-less stamp with
    milliseconds, ``[level]``)."""
    if line[width + 10 : width + 11] == b" ":  # VS Code: "YYYY-MM-DD hh:mm:ss.mmm [level] "
        if line[width + 19 : width + 20] != b"." or line[width + 23 : width + 25] != b" [":
            return None
        close = line.find(b"]", width + 25, width + 36)
        if close > 0 and line[width + 25 : close].lower() in _CLIENT_LEVELS:
            return "timestamps/vscode_mcp"
        return None
    space = line.find(b" ", width + 19, width + 40)
    if space < 0 or line[space - 1 : space] != b"Z":
        return None
    if line[space + 1 : space + 5] in _CF_HEADS:
        return "timestamps/cloudflared_text"
    if line[space + 1 : space + 2] != b"[":
        return None
    close = line.find(b"] ", space + 2, space + 124)
    if close < 0:
        return None
    if line[space + 2 : close].lower() in _CLIENT_LEVELS:
        return "timestamps/claude_desktop"
    second = line.find(b"] ", close + 3, close + 14)
    levels = (b"info", b"error", b"warn", b"warning", b"debug")
    if (
        line[close + 2 : close + 3] == b"["
        and second > 0
        and line[close + 3 : second].lower() in levels
    ):
        return "timestamps/claude_desktop"
    return None


def fast_name(line: bytes, width: int) -> str | None:
    """The format :class:`~.formats.LineParser` gives a line whose first ``width``
    bytes are a ``Z`` timestamp and a space, for the common shapes; None otherwise
    (the caller then parses the line)."""
    head = line[width : width + 4]
    if head in _CF_HEADS:
        return "cloudflared_text"
    first = head[:1]
    if first == b"{":
        if line[-1:] != b"}" and line.rstrip()[-1:] != b"}":
            return None
        if b'"jsonrpc"' in line:
            return "timestamps/jsonrpc"
        if line.startswith(b'{"level":', width):
            return "timestamps/cloudflared_json"
        return "timestamps/json"
    if first.isdigit():
        return _stamped_name(line, width)
    space = line.find(b" ", width, width + 9)
    if space < 0:
        return None
    word = line[width:space]
    if word in _PROXY_WORDS:
        return None if _TRACING_TARGET.match(line, space) else "proxy_text"
    if word in _MONTHS:
        return _syslog_name(line, width)
    return None


def _syslog_name(line: bytes, width: int) -> str | None:
    """journald/syslog-wrapped cloudflared text behind the timestamp (``Nov 21 20:00:01
    host cloudflared[7]: 2026-11-21T20:00:01Z INF …``); None for anything else."""
    match = _SYSLOG.match(line, width)
    if match is None or _CF_STAMPED.match(line, match.end()) is None:
        return None
    return "timestamps/syslog/cloudflared_text"


# Digits all read as "0": fast_name gives a payload the name it gives the payload with
# its digits so replaced (every check it makes is on non-digit literals, on ``isdigit``
# or on classes holding every digit), except the syslog path: _CF_STAMPED reads the
# date's digits.
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
# The payload bytes of a line's key: fast_name decides a payload that starts with a
# digit or a cloudflared level within its first 175 bytes.
_KEY = 200


def _shared(key: bytes, clean: bool) -> bool:
    """Whether every line whose payload's first :data:`_KEY` bytes read ``key`` (digits
    as "0") gets from :func:`fast_name` the name it gives ``key`` alone: the whole
    payload (shorter than the key length) or a shape fast_name decides early; not
    syslog (its stamp check reads digits), and JSON only whole and when no stamp in
    the block holds a quote (``clean``: fast_name looks for "jsonrpc" in the whole
    line)."""
    space = key.find(b" ", 0, 9)
    if space > 0 and key[:space] in _MONTHS:
        return False
    if key[:1] == b"{":
        return clean and len(key) < _KEY
    return len(key) < _KEY or key[:4] in _CF_HEADS or key[:1].isdigit()


def name_lines(
    data: bytes, lines: list[bytes], width: int | list[int]
) -> tuple[dict[str, int], list[int]]:
    """The lines of a block (``data`` split at newlines) named as :func:`fast_name`
    names them: the count per name and the indices of the lines it cannot name (the
    caller parses those). ``width``: the stamp width of every line, or each line's (a
    list).

    Lines come in few shapes. Each line's key (its payload's first bytes, digits read
    as "0") is cut in C, the keys are counted, and fast_name runs once per distinct
    key that decides its lines' name (:func:`_shared`), on the key itself. Only the
    other lines (syslog, long unusual payloads, lines fast_name cannot name) are named
    one by one.
    """
    normal = data.translate(_DIGITS)
    rows = normal.split(b"\n")
    if isinstance(width, int):
        keys = [line[width : width + _KEY] for line in rows]
        stamp = normal[:width]  # every stamp of this shape: none holds a quote
        clean = b'"' not in stamp and normal.count(b"\n" + stamp) == len(rows) - 1
    else:  # each line's stamp matched the RFC 3339 pattern: no quote
        keys = [line[at : at + _KEY] for line, at in zip(rows, width, strict=True)]
        clean = True
    if len(keys) != len(lines):  # cannot happen: data is the lines joined
        return name_each(lines, width)
    named: dict[str, int] = {}
    each: set[bytes] = set()  # the keys whose lines are named one by one
    for key, count in Counter(keys).items():
        name = fast_name(key, 0) if _shared(key, clean) else None
        if name is None:
            each.add(key)  # (lines no check names are listed one by one: they are parsed)
        else:
            named[name] = named.get(name, 0) + count
    odd: list[int] = []
    if each:
        for index in compress(range(len(keys)), map(each.__contains__, keys)):
            name = fast_name(lines[index], width if isinstance(width, int) else width[index])
            if name is None:
                odd.append(index)
            else:
                named[name] = named.get(name, 0) + 1
    return named, odd


def name_each(lines: list[bytes], width: int | list[int]) -> tuple[dict[str, int], list[int]]:
    """:func:`name_lines` one line at a time (the reference it must agree with)."""
    widths = repeat(width) if isinstance(width, int) else width
    names = list(map(fast_name, lines, widths))
    named = Counter(names)
    named.pop(None, 0)
    return dict(named), [i for i, name in enumerate(names) if name is None]
