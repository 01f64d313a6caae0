"""Per-line format detection: what wrote a line, when, at which level.

A source's ``kind`` is only a hint: lines of one file come from many writers
(journald wraps cloudflared, an add-on script interleaves its own lines, Claude
Desktop copies a server's stderr into its log). Every line is therefore looked at
on its own. Wrappers are peeled first (Docker Compose ``name | ``, a collector's or
``kubectl logs --timestamps`` RFC 3339 prefix, journald/syslog ``Mon DD hh:mm:ss
host prog[pid]: ``), then the payload is recognised:

==================  ====================================================================
format              shape (real examples in tests/fixtures/logs/SOURCES.md)
==================  ====================================================================
cloudflared_text    ``<RFC3339> INF|WRN|ERR|DBG|FTL <msg> k=v…`` (2021-2026) and the
                    2021.1 kitchen-clock form ``2:38PM INF …``
cloudflared_json    zerolog JSON, ``{"level":…,"time":…,"message":…}``
logfmt              ``time=… level=… msg=…`` (logrus: cloudflared 2020, slog)
json                any other JSON object line
jsonrpc             a bare JSON-RPC message (``"jsonrpc"`` key)
claude_desktop      ``<RFC3339> [server] [level] msg`` or ``[level] [server] msg``
vscode_mcp          ``YYYY-MM-DD hh:mm:ss.mmm [level] msg`` (zone-less, local time)
rust_tracing        ``<RFC3339>  INFO target: msg``
env_logger          ``[<RFC3339> LEVEL target] msg``
go_log              ``YYYY/MM/DD hh:mm:ss msg`` (local time)
mcp_proxy           Go ``log`` lines of mcp-proxy: ``YYYY/MM/DD hh:mm:ss <server> msg``
proxy_text          ``[<RFC3339>] INFO|WARN|ERROR <msg> k=v…``
python_logging      ``INFO:     msg`` / ``WARNING:name:msg``
addon               Home Assistant add-on wrapper: ``[hh:mm:ss] INFO: …``, ``s6-rc: info: …``
go_panic            first line of a Go panic / stack dump (``panic:``, ``goroutine 1 [``)
syslog              a syslog/journald line whose payload is free text
timestamped         a line with a recognised timestamp and free text
==================  ====================================================================

Wrapped lines are named ``<wrapper>/<payload>`` (``syslog/cloudflared_text``,
``compose/cloudflared_text``, ``timestamps/json``). A line with no recognisable shape
is ``unknown``; the scanner then groups it with the record before it when it is an
undated continuation (stack frames, a multi-line message).

Time: a stamp with a zone is exact. A zone-less stamp (VS Code, Go ``log``,
syslog, time-only stamps) is read in :attr:`LineParser.zone` and reported with
``assumed=True``; a stamp without a date takes the date of the last dated line.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import ConfigError

NS = 1_000_000_000
UNKNOWN = "unknown"

FATAL, ERROR, WARN, INFO, DEBUG = "fatal", "error", "warn", "info", "debug"
_LEVELS: dict[bytes, str] = {
    b"FTL": FATAL,
    b"FATAL": FATAL,
    b"FATA": FATAL,
    b"PANIC": FATAL,
    b"CRIT": FATAL,
    b"CRITICAL": FATAL,
    b"ERR": ERROR,
    b"ERROR": ERROR,
    b"ERRO": ERROR,
    b"WRN": WARN,
    b"WARN": WARN,
    b"WARNING": WARN,
    b"INF": INFO,
    b"INFO": INFO,
    b"NOTICE": INFO,
    b"DBG": DEBUG,
    b"DEBUG": DEBUG,
    b"DEBU": DEBUG,
    b"TRC": DEBUG,
    b"TRACE": DEBUG,
}


def level_of(word: bytes) -> str | None:
    """The normalised level of a level word in any case (``WRN``, ``warning``…)."""
    return _LEVELS.get(word.upper())


@dataclass(frozen=True, slots=True)
class Parsed:
    """One line as understood: format, time, level and the message part.

    ``ns`` is None for an undated line. ``assumed`` says the zone (or the date) was
    not in the line and was taken from the configuration or the previous line.
    ``body`` is the payload after wrappers, timestamp and level. ``tail`` marks a
    line whose payload, behind a collector's timestamp (``docker logs
    --timestamps``, ``podman logs -t``, ``kubectl logs --timestamps``), is blank or
    an unrecognised undated line — a stack frame or a message's next line, which
    the scanner may join to the record before it (see :mod:`.line_scan`).
    """

    fmt: str
    ns: int | None
    assumed: bool
    level: str
    body: bytes
    tail: bool = False


NOTHING = Parsed(UNKNOWN, None, False, "", b"")

_TS = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9})\d*)?"
    rb"(Z|z|[+-]\d\d:?\d\d)?"
)
_GO_TS = re.compile(rb"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? ")
_KITCHEN = re.compile(rb"(\d{1,2}):(\d\d)(AM|PM) (INF|WRN|ERR|DBG|FTL|TRC) ")
_CLOCK = re.compile(rb"\[(\d\d):(\d\d):(\d\d)\] ([A-Z]+):? ")
_SYSLOG = re.compile(
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ \d]\d) (\d\d):(\d\d):(\d\d)"
    rb"(?:(?: [^\s:\[]+)? [^\s:\[]+(?:\[\d+\])?: |: )"
)
_SYSLOG_TAG = re.compile(rb"[^\s:\[]+ [^\s:\[]+(?:\[\d+\])?: ")
_COMPOSE = re.compile(rb"[A-Za-z0-9][\w.\-]*\s*\| ")
_ENV_LOGGER = re.compile(rb"\[(\S+) +([A-Z]+) +[^\]]*\] ")
_BRACKET = re.compile(rb"\[([^\]\n]{1,120})\] ?")
_TRACING = re.compile(
    rb" *(TRACE|DEBUG|INFO|WARN|ERROR) +(?:\x1b\[[0-9;]*m)*[\w:<>\-.]+(?:\{[^}]*\})?:"
)
_LEVEL_WORD = re.compile(rb"([A-Za-z]{3,8})\b:? *")
_LOGFMT = re.compile(rb'(?:^|\s)(?:level|lvl)="?(\w+)')
_PY_LOGGING = re.compile(rb"(DEBUG|INFO|WARNING|ERROR|CRITICAL):(?: +|[\w.]+:)")
_ADDON = re.compile(
    rb"(?:s6-rc|s6-svscan|s6-supervise|cont-init|cont-finish|services-up|s6-overlay[\w-]*): "
)
_PANIC_STARTS = (
    b"panic: ",
    b"fatal error: ",
    b"goroutine ",
    b"Recover from ",
    b"thread '",
    b"Traceback (most recent call last)",
    b"SIGSEGV",
    b"SIGABRT",
)
_CLAUDE_LEVELS = frozenset((b"info", b"error", b"warn", b"warning", b"debug"))
_VSCODE_LEVELS = frozenset((b"info", b"error", b"warning", b"debug", b"trace"))
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun")
        + (b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
    )
}


def zone_of(name: str | None) -> tzinfo:
    """``UTC``, an IANA zone name (``Europe/Berlin``) or a fixed offset (``+02:00``)."""
    if not name or name.upper() in ("UTC", "Z"):
        return UTC
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if match:
        sign = -1 if match[1] == "-" else 1
        return timezone_fixed(sign * (int(match[2]) * 60 + int(match[3])))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"tz: {name!r} is not a time zone (an IANA name such as Europe/Berlin, "
            "UTC, or an offset such as +02:00)"
        ) from None


def timezone_fixed(minutes: int) -> tzinfo:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


class LineParser:
    """Parses lines of ONE source (it remembers the last date for time-only stamps).

    Args:
        zone: the zone zone-less stamps are read in.
        default_date: (year, month, day) used for time-only stamps before any dated
            line (the review passes the window start's date).
    """

    def __init__(
        self, zone: tzinfo = UTC, default_date: tuple[int, int, int] | None = None
    ) -> None:
        self.zone = zone
        self._date = default_date or (1970, 1, 1)
        self._seconds: dict[tuple[bytes, bytes | None], tuple] = {}
        self._local: dict[tuple[int, int, int, int], int] = {}
        self._days: dict[tuple[int, int, int], int] = {}

    # -- time ----------------------------------------------------------------------

    def _naive_ns(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
        """Epoch ns of a wall-clock time in :attr:`zone` (offset cached per hour)."""
        key = (y, mo, d, h)
        offset = self._local.get(key)
        if offset is None:
            try:
                moment = datetime(y, mo, d, h, 30, tzinfo=self.zone)
                delta = moment.utcoffset()
            except ValueError:
                delta = None
            offset = int(delta.total_seconds()) if delta is not None else 0
            if len(self._local) > 4096:
                self._local.clear()
            self._local[key] = offset
        return (calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - offset) * NS

    def stamp(self, match: re.Match[bytes]) -> tuple[int, bool] | None:
        """ns and whether the zone was assumed, for a :data:`_TS` match."""
        head = match.group(0)[:19]
        zone = match.group(8)
        cached = self._seconds.get((head, zone))
        if cached is None:
            cached = self._stamp_seconds(match, zone)
            if len(self._seconds) > 4096:
                self._seconds.clear()
            self._seconds[(head, zone)] = cached
        if cached[0] is None:
            return None
        seconds, date = cached
        self._date = date
        fraction = match.group(7)
        extra = int(fraction.ljust(9, b"0")) if fraction else 0
        return seconds * NS + extra, zone is None

    def _stamp_seconds(
        self, match: re.Match[bytes], zone: bytes | None
    ) -> tuple[int, tuple[int, int, int]] | tuple[None, None]:
        try:
            y, mo, d = int(match.group(1)), int(match.group(2)), int(match.group(3))
            h, mi, s = int(match.group(4)), int(match.group(5)), int(match.group(6))
        except ValueError:
            return None, None
        if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
            return None, None
        if zone is None:
            return self._naive_ns(y, mo, d, h, mi, s) // NS, (y, mo, d)
        days = self._days.get((y, mo, d))
        if days is None:
            days = calendar.timegm((y, mo, d, 0, 0, 0, 0, 0, 0)) // 86400
            self._days[(y, mo, d)] = days
        seconds = days * 86400 + h * 3600 + mi * 60 + s
        if zone not in (b"Z", b"z"):
            digits = zone[1:].replace(b":", b"")
            offset = int(digits[:2]) * 3600 + int(digits[2:4]) * 60
            seconds -= offset if zone[:1] == b"+" else -offset
        return seconds, (y, mo, d)

    def _clock(self, h: int, mi: int, s: int) -> int:
        y, mo, d = self._date
        return self._naive_ns(y, mo, d, h % 24, mi % 60, s % 61)

    # -- lines -----------------------------------------------------------------------

    def parse(self, line: bytes) -> Parsed:
        """The format, time, level and body of one line (never raises)."""
        if line[-1:] == b"\r":
            line = line[:-1]
        first = line[:1]
        if not first:
            return NOTHING
        if first.isdigit():
            return self._digit(line)
        if first == b"{":
            return self._json(line, "")
        if first == b"[":
            return self._bracket(line)
        if first.isalpha():
            return self._alpha(line)
        if first in b" \t":
            return NOTHING
        return NOTHING

    def _digit(self, line: bytes, wrapper: str = "") -> Parsed:
        match = _TS.match(line)
        if match is not None:
            stamp = self.stamp(match)
            if stamp is not None:
                return self._after_stamp(line, match.end(), stamp, wrapper)
        match = _GO_TS.match(line)
        if match is not None:
            y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
            if 1 <= mo <= 12 and 1 <= d <= 31:
                self._date = (y, mo, d)
                frac = match.group(7)
                ns = self._naive_ns(y, mo, d, h % 24, mi % 60, s % 61)
                ns += int(frac.ljust(9, b"0")) if frac else 0
                body = line[match.end() :]
                fmt = "mcp_proxy" if body[:1] == b"<" and b"> " in body[:64] else "go_log"
                return Parsed(_wrap(wrapper, fmt), ns, True, _guess_level(body), body)
        match = _KITCHEN.match(line)
        if match is not None:
            h = int(match.group(1)) % 12 + (12 if match.group(3) == b"PM" else 0)
            ns = self._clock(h, int(match.group(2)), 0)
            return Parsed(
                _wrap(wrapper, "cloudflared_text"),
                ns,
                True,
                _LEVELS[match.group(4)],
                line[match.end() :],
            )
        return NOTHING

    def _after_stamp(self, line: bytes, end: int, stamp: tuple[int, bool], wrapper: str) -> Parsed:
        ns, assumed = stamp
        rest = line[end:]
        if rest[:1].isdigit() and not wrapper:  # a timestamp glued to the line (TrueNAS)
            inner = self._digit(rest, "timestamps")
            if inner.fmt != UNKNOWN:
                return _outer(inner, ns, assumed)
        if rest[:1] != b" ":
            blank = not rest and not wrapper and line[:1].isdigit()
            return Parsed(_wrap(wrapper, "timestamped"), ns, assumed, "", rest, blank)
        body = rest[1:]
        head = body[:4]
        if head[3:4] == b" " and head[:3] in _LEVELS and head[:3].isupper():
            return Parsed(
                _wrap(wrapper, "cloudflared_text"), ns, assumed, _LEVELS[head[:3]], body[4:]
            )
        first = body[:1]
        if first.isdigit() and not wrapper:
            inner = self._digit(body, "timestamps")
            if inner.fmt != UNKNOWN:
                return _outer(inner, ns, assumed)
        if first == b"{" and not wrapper:
            inner = self._json(body, "timestamps")
            return _outer(inner, ns, assumed)
        if first == b"[":
            return self._bracketed_client(body, ns, assumed, wrapper)
        if first == b" " or body[:5] in (b"TRACE", b"DEBUG", b"ERROR") or head == b"INFO":
            match = _TRACING.match(body)
            if match is not None:
                level = _LEVELS[match.group(1)]
                return Parsed(_wrap(wrapper, "rust_tracing"), ns, assumed, level, body)
        if body.startswith(_PANIC_STARTS):
            return Parsed(_wrap(wrapper, "go_panic"), ns, assumed, FATAL, body)
        match = _LEVEL_WORD.match(body)
        if match is not None:
            level = level_of(match.group(1))
            if level is not None and match.group(1).isupper():
                return Parsed(_wrap(wrapper, "proxy_text"), ns, assumed, level, body[match.end() :])
        if not wrapper:
            syslog = _SYSLOG.match(body)
            if syslog is not None:
                inner = self._syslog_line(body, syslog)
                return Parsed("timestamps/" + inner.fmt, ns, assumed, inner.level, inner.body)
            if body.startswith((b"time=", b"level=", b"ts=")):
                inner = self._alpha(body, "timestamps")
                return _outer(inner, ns, assumed)
            if _SYSLOG_TAG.match(body):
                tag = _SYSLOG_TAG.match(body)
                assert tag is not None
                inner = self.parse(body[tag.end() :])
                return self._syslog(inner, ns, assumed, body[tag.end() :])
            if line[:1].isdigit():  # a collector's prefix: is the payload a line's tail?
                alone = self.parse(body) if body else NOTHING
                tail = alone.fmt == UNKNOWN and alone.ns is None
                return Parsed("timestamped", ns, assumed, _guess_level(body), body, tail)
        return Parsed(_wrap(wrapper, "timestamped"), ns, assumed, _guess_level(body), body)

    def _bracketed_client(self, body: bytes, ns: int, assumed: bool, wrapper: str) -> Parsed:
        """``[a] [b] msg`` after a timestamp: Claude Desktop (either order) or VS Code."""
        first = _BRACKET.match(body)
        if first is None:
            return Parsed(_wrap(wrapper, "timestamped"), ns, assumed, "", body)
        a = first.group(1)
        second = _BRACKET.match(body, first.end())
        a_level = a.lower() in _CLAUDE_LEVELS or a.lower() in _VSCODE_LEVELS
        if second is not None:
            b = second.group(1)
            if a_level and not assumed:
                return Parsed(
                    _wrap(wrapper, "claude_desktop"),
                    ns,
                    assumed,
                    level_of(a) or INFO,
                    body[first.end() :],
                )
            if b.lower() in _CLAUDE_LEVELS and not a_level:
                return Parsed(
                    _wrap(wrapper, "claude_desktop"),
                    ns,
                    assumed,
                    level_of(b) or INFO,
                    b"[" + a + b"] " + body[second.end() :],
                )
        if a_level:
            fmt = "vscode_mcp" if assumed else "claude_desktop"
            return Parsed(
                _wrap(wrapper, fmt), ns, assumed, level_of(a) or INFO, body[first.end() :]
            )
        return Parsed(_wrap(wrapper, "timestamped"), ns, assumed, "", body)

    def _json(self, line: bytes, wrapper: str) -> Parsed:
        stripped = line.rstrip()
        if stripped[-1:] != b"}":
            return (
                NOTHING
                if not wrapper
                else Parsed(_wrap(wrapper, "timestamped"), None, False, "", line)
            )
        ns: int | None = None
        assumed = False
        for key in (b'"time"', b'"ts"', b'"timestamp"', b'"@timestamp"'):
            at = line.find(key, 0, 4096)
            if at < 0:
                continue
            quote = line.find(b'"', at + len(key), at + len(key) + 8)
            if quote < 0:
                continue
            match = _TS.match(line, quote + 1)
            if match is not None:
                stamp = self.stamp(match)
                if stamp is not None:
                    ns, assumed = stamp
                    break
        if b'"jsonrpc"' in line[:4096]:
            fmt = "jsonrpc"
        elif line.startswith(b'{"level":'):
            fmt = "cloudflared_json"
        else:
            fmt = "json"
        level = ""
        at = line.find(b'"level":"', 0, 4096)
        if at >= 0:
            end = line.find(b'"', at + 9, at + 30)
            level = level_of(line[at + 9 : end]) or "" if end > 0 else ""
        return Parsed(_wrap(wrapper, fmt), ns, assumed, level, line)

    def _bracket(self, line: bytes) -> Parsed:
        match = _ENV_LOGGER.match(line)
        if match is not None:
            stamp_match = _TS.fullmatch(match.group(1))
            level = level_of(match.group(2))
            if stamp_match is not None and level is not None:
                stamp = self.stamp(stamp_match)
                if stamp is not None:
                    return Parsed("env_logger", stamp[0], stamp[1], level, line[match.end() :])
        match = _CLOCK.match(line)
        if match is not None:
            level = level_of(match.group(4))
            if level is not None:
                ns = self._clock(int(match.group(1)), int(match.group(2)), int(match.group(3)))
                return Parsed("addon", ns, True, level, line[match.end() :])
        match = _TS.match(line, 1)
        if match is not None and line[match.end() : match.end() + 1] == b"]":
            stamp = self.stamp(match)
            if stamp is not None:
                return self._after_stamp(line, match.end() + 1, stamp, "")
        return NOTHING

    def _alpha(self, line: bytes, wrapper: str = "") -> Parsed:
        head = line[:12]
        if head.startswith((b"time=", b"level=", b"ts=", b"t=", b"lvl=", b"msg=")) or (
            b" level=" in line[:200] and b"msg=" in line
        ):
            return self._logfmt(line, wrapper)
        if not wrapper:
            match = _SYSLOG.match(line)
            if match is not None:
                return self._syslog_line(line, match)
            if b"| " in line[:96]:
                match = _COMPOSE.match(line)
                if match is not None:
                    inner = self._compose_inner(line[match.end() :])
                    return Parsed(
                        _wrap("compose", inner.fmt if inner.fmt != UNKNOWN else "text"),
                        inner.ns,
                        inner.assumed,
                        inner.level,
                        inner.body or line[match.end() :],
                    )
        if line.startswith(_PANIC_STARTS):
            return Parsed(_wrap(wrapper, "go_panic"), None, False, FATAL, line)
        match = _PY_LOGGING.match(line)
        if match is not None:
            level = level_of(match.group(1)) or INFO
            return Parsed(_wrap(wrapper, "python_logging"), None, False, level, line[match.end() :])
        if _ADDON.match(line):
            word = line.split(b": ", 2)[1:2]
            level = level_of(word[0]) if word else None
            return Parsed(_wrap(wrapper, "addon"), None, False, level or INFO, line)
        match = _LEVEL_WORD.match(line)
        if match is not None and match.group(1).isupper():
            level = level_of(match.group(1))
            if level is not None and len(match.group(1)) >= 4:
                return Parsed(_wrap(wrapper, "proxy_text"), None, False, level, line[match.end() :])
        return NOTHING

    def _compose_inner(self, body: bytes) -> Parsed:
        inner = self.parse(body)
        return inner

    def _logfmt(self, line: bytes, wrapper: str) -> Parsed:
        ns: int | None = None
        assumed = False
        for key in (b"time=", b"ts=", b"t="):
            at = line.find(key, 0, 200)
            if at < 0 or (at and line[at - 1 : at] not in (b" ", b"\t")):
                continue
            start = at + len(key) + (1 if line[at + len(key) : at + len(key) + 1] == b'"' else 0)
            match = _TS.match(line, start)
            if match is not None:
                stamp = self.stamp(match)
                if stamp is not None:
                    ns, assumed = stamp
                    break
        match = _LOGFMT.search(line, 0)
        level = (level_of(match.group(1)) or "") if match else ""
        return Parsed(_wrap(wrapper, "logfmt"), ns, assumed, level, line)

    def _syslog_line(self, line: bytes, match: re.Match[bytes]) -> Parsed:
        month = _MONTHS[match.group(1)]
        day = int(match.group(2))
        h, mi, s = int(match.group(3)), int(match.group(4)), int(match.group(5))
        year = self._date[0]
        if month > self._date[1] + 6:  # December lines read in January: last year
            year -= 1
        ns = self._naive_ns(year, month, day, h % 24, mi % 60, s % 61)
        payload = line[match.end() :]
        inner = self.parse(payload)
        self._date = (year, month, day) if inner.ns is None else self._date
        return self._syslog(inner, ns, True, payload)

    @staticmethod
    def _syslog(inner: Parsed, ns: int, assumed: bool, payload: bytes) -> Parsed:
        if inner.fmt == UNKNOWN:
            return Parsed("syslog", ns, assumed, _guess_level(payload), payload)
        if inner.ns is not None and not inner.assumed:
            ns, assumed = inner.ns, False
        return Parsed("syslog/" + inner.fmt.split("/")[-1], ns, assumed, inner.level, inner.body)


def _wrap(wrapper: str, fmt: str) -> str:
    return f"{wrapper}/{fmt}" if wrapper else fmt


def _outer(inner: Parsed, ns: int, assumed: bool) -> Parsed:
    """A wrapped line: the wrapper's zoned time wins over a zone-less inner one."""
    if inner.ns is not None and assumed and not inner.assumed:
        return inner
    return Parsed(inner.fmt, ns, assumed, inner.level, inner.body)


_GUESS = re.compile(rb"\b(ERROR|FATAL|WARN(?:ING)?|error|fatal|warn(?:ing)?)\b")


def _guess_level(body: bytes) -> str:
    match = _GUESS.search(body, 0, 200)
    return (level_of(match.group(1)) or "") if match else ""
