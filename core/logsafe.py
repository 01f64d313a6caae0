"""Redaction for log output: a filter installed on every handler of the root and
Prefect loggers for the duration of a run, so that nothing a step or an SDK logs
reaches the console or the Prefect API with a secret in it."""

from __future__ import annotations

import logging

from core.redact import Redactor


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a broken format string is logged as is, redacted)
            message = str(record.msg)
        record.msg = self.redactor.text(message)
        record.args = None
        return True


def _handlers() -> list[logging.Handler]:
    handlers = list(logging.getLogger().handlers)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (
            name.startswith("prefect") or name.startswith("mcp_ir")
        ):
            handlers.extend(logger.handlers)
    return handlers


def install(redactor: Redactor) -> RedactingFilter:
    flt = RedactingFilter(redactor)
    for handler in _handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
        else:
            for f in handler.filters:
                if isinstance(f, RedactingFilter):
                    f.redactor = redactor
    return flt
