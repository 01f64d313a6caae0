"""The OAuth 2.0 authorization server stand-in (sandbox/oauth_server.py), served
over HTTP once per test session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sandbox.oauth_server import create_app
from sandbox.serve import serve_in_thread


@dataclass(frozen=True)
class OAuthSandbox:
    """A running authorization server and one registered confidential client.

    ``other_client_id``/``other_client_secret`` is a second client, for tests of
    tokens issued to someone else.
    """

    url: str
    client_id: str
    client_secret: str
    other_client_id: str
    other_client_secret: str

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.url}/revoke"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.url}/introspect"

    def issue(
        self, token_type: str = "access_token", *, client_id: str | None = None, **extra: Any
    ) -> dict:
        """Seeds tokens; ``token_type`` is access_token, refresh_token or both."""
        body = {"client_id": client_id or self.client_id, "token_type": token_type, **extra}
        response = httpx.post(f"{self.url}/_sandbox/issue", json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def calls(self) -> list[dict]:
        response = httpx.get(f"{self.url}/_sandbox/calls", timeout=5)
        response.raise_for_status()
        return response.json()["calls"]

    def fail_next(
        self, endpoint: str, count: int = 1, *, status: int = 503, retry_after: int = 0
    ) -> None:
        """Makes the next ``count`` calls to ``endpoint`` answer ``status``."""
        body = {"endpoint": endpoint, "count": count, "status": status, "retry_after": retry_after}
        httpx.post(f"{self.url}/_sandbox/faults", json=body, timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def oauth_sandbox() -> Iterator[OAuthSandbox]:
    client_id, client_secret = "mcp-ir-rotator", "cs_" + secrets.token_urlsafe(18)
    other_id, other_secret = "someone-else", "cs_" + secrets.token_urlsafe(18)
    app = create_app({client_id: client_secret, other_id: other_secret})
    handle = serve_in_thread(app)
    try:
        yield OAuthSandbox(handle.url, client_id, client_secret, other_id, other_secret)
    finally:
        handle.stop()
