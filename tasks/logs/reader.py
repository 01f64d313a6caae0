"""Reading log files: safe opening, bounded line blocks, and seeking to a time.

Memory stays bounded by ``block_size + max_line`` whatever the file holds: a line
longer than ``max_line`` is reported by its head and length, the rest skipped.
Opening never blocks (a FIFO is opened non-blocking and refused) and never raises
for a bad file: the caller gets an :class:`OpenFailure` to turn into a finding.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import BinaryIO

from .timestamps import parse_ns

BLOCK_SIZE = 1 << 20
GZIP_BLOCK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
# What a damaged gzip member raises while it is being read.
GZIP_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class OpenFailure:
    """Why a log file could not be read (it becomes a finding about the log)."""

    path: Path
    reason: str


@dataclass
class Member:
    """One open file of a source: a raw handle, whether it is gzip, and its size."""

    path: Path
    raw: BinaryIO
    gzip: bool
    size: int

    def stream(self) -> BinaryIO:
        """The decompressed byte stream, from the current raw position."""
        if self.gzip:
            return gzip.GzipFile(fileobj=self.raw, mode="rb")  # type: ignore[return-value]
        return self.raw

    def close(self) -> None:
        self.raw.close()


def open_member(path: Path) -> Member | OpenFailure:
    """Opens ``path`` for reading without ever blocking or raising.

    A FIFO, device, directory, dangling symlink or permission problem is returned as
    an :class:`OpenFailure`. ``O_NONBLOCK`` matters: opening a FIFO for reading
    would otherwise wait forever for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        if os.path.islink(path):
            return OpenFailure(path, f"dangling symlink to {os.readlink(path)}")
        return OpenFailure(path, "file not found")
    except IsADirectoryError:
        return OpenFailure(path, "is a directory, not a log file")
    except OSError as exc:
        return OpenFailure(path, f"cannot open: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else _file_type(info.st_mode)
            os.close(fd)
            return OpenFailure(path, f"is {kind}, not a regular file")
        os.set_blocking(fd, True)
        raw = os.fdopen(fd, "rb", buffering=0)
    except OSError as exc:
        os.close(fd)
        return OpenFailure(path, f"cannot read: {exc.strerror or exc}")
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        return OpenFailure(path, f"cannot read: {exc.strerror or exc}")
    return Member(path=path, raw=raw, gzip=magic == GZIP_MAGIC, size=info.st_size)


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


@dataclass(frozen=True)
class Block:
    """Complete lines read at ``offset`` (offset of the first line in the stream):
    ``data`` is the lines joined by newlines, without the final newline.

    When ``oversized`` is set, ``data`` holds only the first 4 KiB of one line of
    that many bytes.
    """

    offset: int
    data: bytes
    oversized: int = 0


def iter_blocks(
    read: Callable[[int], bytes],
    offset: int = 0,
    *,
    block_size: int = BLOCK_SIZE,
    max_line: int = 1 << 20,
) -> Iterator[Block]:
    """Splits a byte stream into blocks of complete lines, in bounded memory.

    Lines inside one block may exceed ``max_line`` by up to ``block_size``; the
    caller checks lengths. Only a line longer than the buffer is skipped here,
    reported as an oversized :class:`Block` holding its first 4 KiB.
    A final line without a newline is returned too.
    """
    carry = b""
    skipping = 0  # bytes of an oversized line seen so far (0: not skipping)
    head = b""
    while True:
        data = read(block_size)
        if not data:
            break
        if skipping:
            newline = data.find(b"\n")
            if newline < 0:
                skipping += len(data)
                continue
            yield Block(offset, head, oversized=skipping + newline)
            offset += skipping + newline + 1
            skipping = 0
            data = data[newline + 1 :]
        last = data.rfind(b"\n")  # carry never holds one: it is what followed the last
        if last < 0:
            carry += data
        else:
            # One copy into the block (carry + data, then a slice of it, made two).
            lines = b"".join((carry, memoryview(data)[:last])) if carry else data[:last]
            yield Block(offset, lines)
            offset += len(lines) + 1
            carry = data[last + 1 :]
        if len(carry) > max_line:
            head, skipping, carry = carry[:4096], len(carry), b""
    if skipping:
        yield Block(offset, head, oversized=skipping)
    elif carry:
        yield Block(offset, carry)


def line_ns(line: bytes) -> int | None:
    """The timestamp of a line: a leading RFC 3339 token (Docker/Kubernetes/CloudWatch
    artifacts, cloudflared, the proxy's text lines), ``time=`` (slog text), or a
    ``"time"``-like field of a JSON line."""
    first = line[:1]
    if first.isdigit():
        space = line.find(b" ", 19, 48)
        return parse_ns(line[:space] if space > 0 else line[:48])
    if first == b"{":
        return json_ns(line)
    if line.startswith(b"time="):
        space = line.find(b" ", 5, 60)
        return parse_ns(line[5:space].strip(b'"') if space > 0 else line[5:60].strip(b'"'))
    return None


_JSON_TIME_KEYS = (b'"time"', b'"ts"', b'"timestamp"', b'"@timestamp"')


def json_ns(line: bytes) -> int | None:
    """The time field of a JSON log line, without parsing the whole object."""
    for key in _JSON_TIME_KEYS:
        at = line.find(key, 0, 4096)
        if at < 0:
            continue
        colon = line.find(b":", at + len(key), at + len(key) + 8)
        quote = line.find(b'"', colon + 1, colon + 8)
        if colon < 0 or quote < 0:
            continue
        end = line.find(b'"', quote + 1, quote + 48)
        if end > 0:
            return parse_ns(line[quote + 1 : end])
    return None


def seek_offset(raw: BinaryIO, size: int, target_ns: int, *, probe: int = 1 << 16) -> int:
    """A line-start offset before every line with a timestamp ≥ ``target_ns``.

    Binary search on byte offsets, resynchronising to the next line start at each
    probe (and skipping lines without a timestamp), valid for time-ordered files.
    Returns 0 when nothing can be concluded; the caller filters every line it then
    reads by its timestamp, so the seek only has to be a safe lower bound.
    """
    low, high = 0, size
    while high - low > probe:
        middle = (low + high) // 2
        raw.seek(middle)
        chunk = raw.read(probe)
        newline = chunk.find(b"\n")
        found: tuple[int, int] | None = None
        while newline >= 0:
            start = newline + 1
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            ns = line_ns(chunk[start:end])
            if ns is not None:
                found = (middle + start, ns)
                break
            newline = end
        if found is None:
            high = middle  # no timestamped line here: search the lower half
        elif found[1] < target_ns:
            low = found[0]
        else:
            high = middle
    return low


def first_ns(member: Member, *, limit: int = 1 << 16) -> int | None:
    """The first timestamp in a member (gzip or plain), reading at most ``limit``
    decompressed bytes; None when unreadable or not found."""
    try:
        member.raw.seek(0)
        stream = member.stream()
        head = stream.read(limit)
    except GZIP_ERRORS:
        return None
    finally:
        member.raw.seek(0)
    for line in head.split(b"\n")[:-1] or [head]:
        ns = line_ns(line)
        if ns is not None:
            return ns
    return None


def dated_ns_before(data: bytes, position: int) -> int | None:
    """The timestamp of the last dated line before the line starting at ``position``
    in ``data`` (what an undated continuation line inherits); None if there is none."""
    end = position - 1
    while end >= 0:
        start = data.rfind(b"\n", 0, end) + 1
        ns = line_ns(data[start:end])
        if ns is not None:
            return ns
        end = start - 1
    return None


def bisect_lines(data: bytes, target_ns: int) -> int:
    """In a block of time-ordered lines, the start offset of the first dated line with
    a timestamp ≥ ``target_ns``, or ``len(data) + 1`` when there is none.

    Undated lines inherit the previous dated line's time, so the answer is always a
    dated line: the lines before it all fall before ``target_ns``.
    """
    low, high, best = 0, len(data) + 1, len(data) + 1
    while low < high:
        middle = (low + high) // 2
        newline = data.rfind(b"\n", low, middle)
        start = newline + 1 if newline >= 0 else low
        probe, ns, end = start, None, start
        while probe < high:
            end = data.find(b"\n", probe)
            end = len(data) if end < 0 else end
            ns = line_ns(data[probe:end])
            if ns is not None:
                break
            probe = end + 1
        if ns is None:
            high = start
        elif ns >= target_ns:
            best, high = probe, start
        else:
            low = end + 1
    return best


def ordered_utc(lines: list[bytes], floor_ns: int | None) -> int | list[int]:
    """Whether a block's lines are in time order with UTC (``Z``) timestamps, which is
    what lets a whole block be judged by its first and last line.

    Returns the payload offset ``n > 0`` when EVERY line starts with a timestamp of
    the same shape (``<token>Z `` of one length: byte order is then time order, and
    the payload starts at ``n``), each line's payload offset (a list) when every line
    starts with a UTC RFC3339Nano stamp of varying fraction length (podman,
    kubectl: :func:`nano_widths`), 0 when the dated lines are ordered but shaped
    variously (undated lines, other stamps), and -1 when the block is not ordered,
    not UTC, or dated inside JSON: the caller then takes the exact path. Tokens of
    equal length compare as bytes; only tokens of a new length are parsed.
    """
    first = lines[0]
    space = first.find(b" ", 19, 48)
    if space > 0 and first[space - 1 : space] == b"Z":
        first_ns = parse_ns(first[:space])
        width = space + 1
        heads = [line[:width] for line in lines]
        joined = b"".join(heads)
        count = len(heads)
        if (
            first_ns is not None
            and (floor_ns is None or first_ns >= floor_ns)
            and len(joined) == width * count  # no line shorter than the prefix
            and joined[width - 2 :: width] == b"Z" * count  # every token ends in Z…
            and joined[width - 1 :: width] == b" " * count  # …right before the payload
            and heads == sorted(heads)
        ):
            return width
        widths = nano_widths(lines, floor_ns)
        if widths is not None:
            return widths
    high: bytes | None = None
    high_ns = floor_ns
    stale = False  # high changed since high_ns was computed
    for line in lines:
        if line[10:11] == b"T" and line[4:5] == b"-":
            space = line.find(b" ", 19, 48)
            token = line[:space] if space > 0 else line
            if token[-1:] != b"Z":
                return -1
            if high is not None and len(token) == len(high):
                if token < high:
                    return -1
                if token > high:
                    high, stale = token, True
                continue
            ns = parse_ns(token)
            if ns is None:
                return -1
            if stale:
                high_ns, stale = parse_ns(high or b""), False
            if high_ns is not None and ns < high_ns:
                return -1
            high, high_ns = token, ns
        elif line[:1] in (b"{", b"t") and line_ns(line) is not None:
            return -1
    return 0


# A UTC RFC3339Nano stamp and its space, the fraction trimmed as ``podman logs -t`` and
# ``kubectl logs --timestamps`` write it; the ranges are those the line parser accepts.
_NANO_STAMP = re.compile(
    rb"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)"
    rb"(?:\.\d{1,9})?Z "
)


def nano_widths(lines: list[bytes], floor_ns: int | None) -> list[int] | None:
    """Each line's payload offset when EVERY line starts with a UTC RFC3339Nano stamp of
    any fraction length (``2026-11-21T20:00:00.1234Z ``) and the lines are in time
    order, not before ``floor_ns``; None otherwise. The variable-width sibling of
    :func:`ordered_utc`: the stamps are compared with their fractions padded."""
    if not all(map(_NANO_STAMP.match, lines)):
        return None
    spaces = list(map(bytes.find, lines, repeat(b" "), repeat(19), repeat(31)))
    keys = [
        line[:19] + line[20 : at - 1].ljust(9, b"0") for line, at in zip(lines, spaces, strict=True)
    ]
    if keys != sorted(keys):
        return None
    first = parse_ns(lines[0][: spaces[0]])
    if first is None or (floor_ns is not None and first < floor_ns):
        return None
    return [at + 1 for at in spaces]
