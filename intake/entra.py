"""``auth: entra-id``: the Azure Monitor action group "secure webhook".

Azure Monitor sends ``Authorization: Bearer <JWT>`` issued by Microsoft Entra ID for
the application the action group names. The token is checked with ``joserfc`` (a
maintained JOSE library): signature against the configured JWKS (a URL, fetched and
cached, refetched when a token names an unknown ``kid`` — Entra ID rotates its keys —
at most once a minute; or a file), then ``iss`` and ``aud`` equal to the configured
values, and ``exp``/``nbf`` against the clock (60 s leeway). A refusal carries a
reason for the log, never the token.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from intake.auth import MAX_SIGNATURE_HEADER, AuthResult
from intake.config import EntraIdConfig

REFETCH_EVERY_S = 60.0
LEEWAY_S = 60


class EntraVerifier:
    """Verifies Entra ID bearer tokens for one source.

    Args:
        config: the source's ``entra_id`` section.
        client: HTTP client for ``jwks_url`` (tests pass one; default a new one).
    """

    def __init__(self, config: EntraIdConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self._client = client
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _load(self) -> KeySet:
        if self.config.jwks_file is not None:
            document = json.loads(Path(self.config.jwks_file).read_text(encoding="utf-8"))
        else:
            client = self._client or httpx.Client(timeout=10)
            try:
                response = client.get(str(self.config.jwks_url))
                response.raise_for_status()
                document = response.json()
            finally:
                if self._client is None:
                    client.close()
        return KeySet.import_key_set(document)

    def _key_set(self, kid: str | None) -> KeySet:
        with self._lock:
            stale = time.monotonic() - self._fetched_at > REFETCH_EVERY_S
            unknown = (
                kid is not None
                and self._keys is not None
                and not any(key.kid == kid for key in self._keys.keys)
            )
            if self._keys is None or (unknown and stale):
                self._keys = self._load()
                self._fetched_at = time.monotonic()
            return self._keys

    def verify(self, headers: Mapping[str, str], now: float | None = None) -> AuthResult:
        """Checks the bearer JWT; never raises on hostile input."""
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 4 * MAX_SIGNATURE_HEADER:
            return AuthResult(False, "missing bearer token")
        try:
            header = _unverified_header(token)
            keys = self._key_set(header.get("kid"))
            decoded = jwt.decode(token, keys, algorithms=list(self.config.algorithms))
            registry = jwt.JWTClaimsRegistry(
                now=int(time.time() if now is None else now),
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.config.issuer},
                aud={"essential": True, "value": self.config.audience},
                exp={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            return AuthResult(False, f"Entra ID token refused: {type(exc).__name__}")
        except (OSError, httpx.HTTPError) as exc:
            return AuthResult(False, f"Entra ID keys unavailable: {type(exc).__name__}")
        return AuthResult(True)


def _unverified_header(token: str) -> dict[str, Any]:
    import base64

    first = token.split(".", 1)[0]
    padded = first + "=" * (-len(first) % 4)
    header = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    if not isinstance(header, dict):
        raise ValueError("JWT header is not an object")
    return header
