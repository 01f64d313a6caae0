"""Reading an alert request's body without ever buffering an unbounded one.

A body within the limit is returned whole. An over-size body (declared or streamed)
is still read to its end, up to :data:`HARD_CAP_FACTOR` times the limit, only to
hash it and keep its first 2 KiB: the intake dead-letters what it refuses with 413
(metadata, SHA-256, the first 2 KiB redacted), so a sender that outgrew the limit
loses nothing silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

PREVIEW_BYTES = 2048
HARD_CAP_FACTOR = 64


@dataclass(frozen=True)
class Received:
    """What was read: the body (None when over the limit), its size, its SHA-256
    (of everything read), the first 2 KiB, and whether reading stopped at the cap."""

    body: bytes | None
    size: int
    sha256: str
    head: bytes
    capped: bool = False


async def read_body(stream: AsyncIterator[bytes], limit: int) -> Received:
    """Reads ``stream``: whole when within ``limit``, else hashed and previewed."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    head = b""
    over = False
    async for chunk in stream:
        size += len(chunk)
        digest.update(chunk)
        if len(head) < PREVIEW_BYTES:
            head += chunk[: PREVIEW_BYTES - len(head)]
        if not over:
            if size > limit:
                over = True
                chunks.clear()
            else:
                chunks.append(chunk)
        if size > limit * HARD_CAP_FACTOR:
            return Received(None, size, digest.hexdigest(), head, capped=True)
    if over:
        return Received(None, size, digest.hexdigest(), head)
    return Received(b"".join(chunks), size, digest.hexdigest(), head)
