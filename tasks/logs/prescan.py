"""The review of a large plain file on two cores: a second process judges the blocks
ahead of the scan.

Everything a block's scan needs that depends on the block alone — its order check
(:func:`.reader.ordered_utc`), the format named for each line, and which lines a rule
could act on (one Aho-Corasick pass, client addresses, suspect tool names) — is
computed by :meth:`.block_scan.BlockScan.block_facts`. A forked process reads the
same file from the same offset with the same :func:`.reader.iter_blocks`, so it
meets the very blocks the scan meets, and sends the facts of two blocks of every
three down a pipe; the scan judges the third itself, so both cores stay busy. The
scan itself (records, rules, counters, time, gaps, rates) stays in one process in
file order, so the result is the serial one by construction: facts are used only
for the block they were computed for (same offset and size), and a block without
them is judged in place. The pipe holds a few blocks' facts, which bounds the
worker's lead and its memory.

Used for a plain member with at least :data:`PARALLEL_BYTES` left after the seek, on
a machine with two or more cores and one of them to spare (1-minute load average),
and only from a single-threaded process (forking a threaded one can copy a lock held
by another thread); otherwise the scan is serial. ``MCP_IR_REVIEW_PARALLEL_BYTES``
overrides the threshold (negative: never); a threshold passed to
:func:`.review.review` itself is used whatever the load (the tests force 0).

Should the worker fail (an error, or killed: the failpoint ``review:prescan`` kills
it as the kernel's OOM killer would), the scan judges the remaining blocks itself,
which gives the same result, and says so: on stderr, and in the source's counts
(``prescan_failed``), which the report and the ``--json`` document show.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from core import failpoints
from core.errors import ConfigError

from .reader import iter_blocks

if TYPE_CHECKING:
    from .block_scan import BlockFacts, BlockScan

PARALLEL_BYTES = 64 << 20
# The worker judges two blocks of every three; the scan judges the third itself while
# it waits least: its own work (records, rules) is about half the worker's per block.
SHARE = 3
ENV_PARALLEL = "MCP_IR_REVIEW_PARALLEL_BYTES"
ENDED_EARLY = "the prescan process ended before its last block"


def parallel_threshold() -> int:
    """Bytes left to read from which a member is prescanned (negative: never).

    Raises:
        ConfigError: ``MCP_IR_REVIEW_PARALLEL_BYTES`` is not an integer.
    """
    text = os.environ.get(ENV_PARALLEL)
    if text is None or not text.strip():
        return PARALLEL_BYTES
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{ENV_PARALLEL}: {text!r} is not an integer (bytes)") from None


def can_fork(*, idle_core: bool) -> bool:
    """Whether a prescan process may be forked here: fork exists, two cores or more,
    and this process runs one thread; with ``idle_core``, also a core to spare (the
    1-minute load average at most the cores less one). On a machine whose cores are
    all busy a second process only competes with the first: measured on 2 cores at a
    load of 5-7, the two processes took longer than one (README, benchmarks)."""
    cores = os.cpu_count() or 1
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and cores >= 2
        and threading.active_count() == 1
        and (not idle_core or os.getloadavg()[0] <= cores - 1)
    )


class _ScanGone(Exception):
    """The scan closed its end: it stopped early (past the window, or rescanning)."""


def _send(conn: Connection, message: object) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
        raise _ScanGone from exc


def _worker(
    scan: BlockScan, path: Path, offset: int, block_size: int, max_line: int, conn: Connection
) -> None:
    """The prescan process: the facts of two blocks of every :data:`SHARE`, in order,
    then None; on a failure its reason (a str) instead, so the scan can say it."""
    try:
        try:
            with open(path, "rb") as raw:
                raw.seek(offset)
                blocks = iter_blocks(raw.read, offset, block_size=block_size, max_line=max_line)
                for index, block in enumerate(blocks):
                    if index % SHARE == SHARE - 1 or block.oversized:
                        continue  # the scan judges this one itself
                    failpoints.reach("review", "prescan")
                    _send(conn, (block.offset, scan.block_facts(block.data, block.offset)))
            _send(conn, None)
        except _ScanGone:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it is, the scan goes on alone
            _send(conn, f"{type(exc).__name__}: {exc}")
    except _ScanGone:
        pass  # nothing to do: the scan no longer needs facts
    finally:
        conn.close()


class Prescan:
    """The receiving end: :meth:`facts` returns the facts of the block at an offset
    (None when the worker has none for it: the scan then judges it in place).
    ``failure`` says why the worker stopped early (it failed or was killed; the scan
    then judges every block itself), None when it did not."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._done = False
        self._pending: tuple[int, BlockFacts] | None = None
        self.failure: str | None = None

    def facts(self, offset: int, size: int) -> BlockFacts | None:
        while not self._done:
            message = self._pending
            self._pending = None
            if message is None:
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    self._done = True
                    self.failure = ENDED_EARLY  # no end mark: it died (the status: below)
                    return None
            if message is None:
                self._done = True
                return None
            if isinstance(message, str):
                self._done = True
                self.failure = message
                return None
            at, facts = message
            if at < offset:
                continue  # a block the scan did not take as one (cannot happen; harmless)
            if at > offset:
                self._pending = message  # a block the worker left to the scan
                return None
            return facts if facts.size == size else None
        return None


@contextmanager
def prescan(
    scan: BlockScan, path: Path, offset: int, block_size: int, max_line: int
) -> Iterator[Prescan]:
    """Starts the prescan process for ``path`` from ``offset``; stops it on exit
    (whether the scan finished, stopped past the window or raised)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_worker,
        args=(scan, path, offset, block_size, max_line, send),
        name="mcp-ir-review-prescan",
        daemon=True,
    )
    process.start()
    send.close()
    ahead = Prescan(receive)
    try:
        yield ahead
    finally:
        receive.close()
        process.join(timeout=0.05)
        if process.is_alive():
            process.terminate()
        process.join()
        if ahead.failure == ENDED_EARLY:
            code = process.exitcode
            how = f"killed by signal {-code}" if code and code < 0 else f"exit status {code}"
            ahead.failure = f"{ENDED_EARLY} ({how})"


__all__ = ["PARALLEL_BYTES", "Prescan", "can_fork", "parallel_threshold", "prescan"]
