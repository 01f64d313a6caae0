"""What the ``anthropic`` SDK can raise, as :mod:`core.errors`, and the middleware
that keeps the SDK from sleeping past a step's deadline.

Every SDK error class the product can meet has one mapping (:func:`api_errors`):

========================================================  =================================
SDK exception                                             core error
========================================================  =================================
``RateLimitError`` 429, ``InternalServerError`` 5xx       :class:`TransientError`
(``ServiceUnavailableError``, ``GatewayTimeoutError``,    (``retry_after`` from the
``OverloadedError`` 529…), ``RequestTimeoutError`` 408,   ``retry-after``/``retry-after-ms``
``ClientClosedRequestError`` 499                          headers)
``APITimeoutError``, ``APIConnectionError``               :class:`TransientError` (the call
                                                          may have been applied)
``AuthenticationError`` 401                               :class:`CredentialsError`
``ConflictError`` 409, ``PreconditionFailedError`` 412    :class:`AnthropicConflict`
``NotFoundError`` 404                                     :class:`AnthropicNotFound`
any other ``APIStatusError`` (400, 402, 403, 413, 422…)   :class:`AnthropicApiError`
``APIResponseValidationError``                            :class:`OperationFailed`
``IdentityTokenFileError`` (WIF token file vanished)      :class:`CredentialsError`, retryable
``WorkloadIdentityError`` (token exchange refused)        :class:`CredentialsError` (5xx/429:
                                                          :class:`TransientError`)
any other ``AnthropicError``                              :class:`OperationFailed`
========================================================  =================================

Each detail names the operation and its subject and ends with the API's
``request-id`` (``(request req_…)``), which is also kept in ``request_id`` and,
through the runner, in the trail.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic

from core import retry
from core.errors import CredentialsError, OperationFailed, TransientError

# With no step deadline (an adapter used outside a run), the SDK may still sleep
# this long for a ``retry-after``; a longer one fails the call at once.
MAX_WAIT_WITHOUT_DEADLINE_S = 60.0
_TRANSIENT_STATUSES = {408, 429, 499}


class AnthropicApiError(OperationFailed):
    """The API refused a request (a 4xx other than 401/408/429). ``status`` and
    ``error_type`` are the API's; ``operation`` names the call (``tunnels.archive``…)."""

    def __init__(
        self,
        operation: str,
        detail: str,
        *,
        status: int,
        error_type: str,
        request_id: str | None = None,
    ) -> None:
        super().__init__(operation, detail, request_id=request_id)
        self.status = status
        self.error_type = error_type


class AnthropicNotFound(AnthropicApiError):
    """The object does not exist (404)."""


class AnthropicConflict(AnthropicApiError):
    """The object changed under the request (409 ``conflict_error``, or 412 when a
    precondition such as the agent ``version`` no longer holds)."""


class RetryAfterBeyondDeadline(anthropic.AnthropicError):
    """Raised by :func:`deadline_guard` for an answer whose ``retry-after`` is
    longer than the step has left: the SDK does not retry it (its retry loop only
    retries API and connection errors), so the call fails now."""

    def __init__(self, response: Any, wait_s: float, left_s: float | None) -> None:
        super().__init__(f"retry-after {wait_s:.0f}s")
        self.response = response
        self.wait_s = wait_s
        self.left_s = left_s


def retry_after_s(headers: Any) -> float | None:
    """The wait an answer asks for: ``retry-after-ms``, else ``retry-after`` in
    seconds or as an HTTP date (how the SDK reads them)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value.strip() else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def _sdk_retries(status: int, headers: Any) -> bool:
    flag = headers.get("x-should-retry")
    if flag in ("true", "false"):
        return flag == "true"
    return status in (408, 409, 429) or status >= 500


def deadline_guard(request: Any, call_next: Any) -> Any:
    """SDK middleware: the SDK obeys any ``retry-after`` before its next try; when
    the wait is longer than the step's remaining deadline (:func:`core.retry.
    remaining`; 60 s outside a step), the call fails now as transient instead."""
    response = call_next(request)
    http = response.http_response
    if http.is_success or not _sdk_retries(http.status_code, http.headers):
        return response
    wait = retry_after_s(http.headers)
    left = retry.remaining()
    if wait is not None and wait > (MAX_WAIT_WITHOUT_DEADLINE_S if left is None else left):
        http.read()
        raise RetryAfterBeyondDeadline(http, wait, left)
    return response


def _body_error(body: Any, fallback: str) -> tuple[str, str]:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("type", "api_error")), str(err.get("message", ""))
    return "api_error", fallback


def _rid(request_id: str | None) -> str:
    return f" (request {request_id})" if request_id else ""


def _status_error(operation: str, subject: str, exc: anthropic.APIStatusError) -> Exception:
    error_type, message = _body_error(exc.body, exc.message)
    status, rid = exc.status_code, exc.request_id
    detail = f"{subject}: HTTP {status} {error_type}: {message}{_rid(rid)}"
    if status >= 500 or status in _TRANSIENT_STATUSES:
        wait = retry_after_s(exc.response.headers)
        return TransientError(f"{operation}: {detail}", retry_after=wait, request_id=rid)
    if status == 401:
        return CredentialsError(
            f"{operation}: {detail}; the API refused the credential (bearer_env or "
            "workload_identity)",
            request_id=rid,
        )
    cls = {404: AnthropicNotFound, 409: AnthropicConflict, 412: AnthropicConflict}.get(
        status, AnthropicApiError
    )
    return cls(operation, detail, status=status, error_type=error_type, request_id=rid)


def _beyond_deadline(operation: str, subject: str, exc: RetryAfterBeyondDeadline) -> Exception:
    http = exc.response
    try:
        body = json.loads(http.content or b"null")
    except ValueError:
        body = None
    error_type, message = _body_error(body, http.reason_phrase)
    rid = http.headers.get("request-id")
    budget = "no step deadline" if exc.left_s is None else f"{max(exc.left_s, 0):.0f}s left"
    return TransientError(
        f"{operation}: {subject}: HTTP {http.status_code} {error_type}: {message}{_rid(rid)}; "
        f"asked to retry after {exc.wait_s:.0f}s ({budget}), so not waiting",
        retry_after=exc.wait_s,
        request_id=rid,
    )


@contextmanager
def api_errors(operation: str, subject: str) -> Iterator[None]:
    """Maps SDK exceptions raised inside the block onto :mod:`core.errors` (see the
    module's table), with ``subject`` (e.g. ``tunnel tnl_…``) in every detail."""
    try:
        yield
    except anthropic.IdentityTokenFileError as exc:
        where = f" {exc.path}" if exc.path else ""
        raise CredentialsError(
            f"{operation}: {subject}: workload identity token file{where} is missing, empty "
            "or unreadable (a projected token being replaced reappears: retried)",
            retryable=True,
        ) from None
    except anthropic.WorkloadIdentityError as exc:
        # The token exchange failed before the request was sent. Its message is
        # already redacted by the SDK; a 5xx or an unreachable endpoint is temporary.
        status, rid = exc.status_code, exc.request_id
        detail = (
            f"{operation}: {subject}: workload identity token exchange failed "
            f"(HTTP {status}){_rid(rid)}"
        )
        if status is None or status >= 500 or status == 429:
            raise TransientError(detail, request_id=rid) from None
        raise CredentialsError(detail, request_id=rid) from None
    except RetryAfterBeyondDeadline as exc:
        raise _beyond_deadline(operation, subject, exc) from None
    except anthropic.APIConnectionError as exc:
        kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "connection failed"
        raise TransientError(
            f"{operation}: {subject}: request {kind} (no answer: it may have been applied)"
        ) from None
    except anthropic.APIStatusError as exc:
        raise _status_error(operation, subject, exc) from None
    except anthropic.APIResponseValidationError as exc:
        rid = exc.response.headers.get("request-id")
        raise OperationFailed(
            operation,
            f"{subject}: the answer (HTTP {exc.status_code}) does not match the API's "
            f"schema{_rid(rid)}",
            request_id=rid,
        ) from None
    except anthropic.AnthropicError as exc:
        raise OperationFailed(operation, f"{subject}: {type(exc).__name__}: {exc}") from None
