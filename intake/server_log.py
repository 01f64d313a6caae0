"""Keeps URL tokens out of the access log.

``auth: url-token`` sources are reached at ``POST /alerts/{source}/{token}``: the
token is a secret, and uvicorn's access log prints the request path. This filter
rewrites the path of every ``uvicorn.access`` record to ``/alerts/{source}/<token>``
before any handler sees it; the intake's own log lines name the source only.
"""

from __future__ import annotations

import logging
import re

TOKEN_PATH = re.compile(r"^(/alerts/[^/?#]*)/[^?#]*")
REPLACEMENT = r"\1/<token>"


class TokenPathFilter(logging.Filter):
    """Rewrites the path argument of uvicorn access records (and any message text
    that holds such a path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(
                TOKEN_PATH.sub(REPLACEMENT, a) if isinstance(a, str) else a for a in args
            )
        if isinstance(record.msg, str) and "/alerts/" in record.msg:
            record.msg = re.sub(r"(/alerts/[^/\s?#\"]*)/[^\s?#\"]*", REPLACEMENT, record.msg)
        return True


_FILTER = TokenPathFilter()


def install_access_log_filter() -> None:
    """Adds the filter to uvicorn's access and error loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
