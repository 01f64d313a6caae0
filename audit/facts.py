"""What the checks read from a target, whatever its kind.

A reader (``facts_compose.ComposeFacts``, ``facts_helm.HelmFacts``) answers the same
questions for its kind; each answer carries where it was read (``source``). A fact
that cannot be read raises :class:`FactUnavailable` with the reason, which the check
reports as ``unverifiable``. Readers only read: no call they make changes anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol


class FactUnavailable(Exception):  # noqa: N818 (an outcome the checks report, not a bug)
    """A fact could not be read; ``reason`` says why (shown as the check's reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Sourced:
    """A value and where it was read."""

    value: Any
    source: str


@dataclass(frozen=True)
class ImageRef:
    """One image reference and where it is declared."""

    where: str
    reference: str


@dataclass(frozen=True)
class StoredCredential:
    """One credential at rest and how it is stored.

    Attributes:
        name: file name (Compose) or ``<Secret>/<key>`` / env var (Helm).
        source: where it was read.
        problems: what is wrong with how it is stored (empty: fine).
        detail: what was seen (mode, owner, mount).
    """

    name: str
    source: str
    problems: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass(frozen=True)
class NetworkView:
    """What can be read of the stack's network reach.

    Attributes:
        verifiable: whether the reach can be decided from what was read (Helm:
            NetworkPolicies; Compose: only what the compose file shows).
        problems: what was found that widens reach.
        observed: what was read, one line per item.
        source: where.
        unverifiable_reason: why the rest cannot be decided.
    """

    verifiable: bool
    problems: list[str]
    observed: list[str]
    source: str
    unverifiable_reason: str = ""


class TargetFacts(Protocol):
    """The questions every kind's reader answers (see module doc)."""

    kind: str

    def proxy_config(self) -> Sourced:
        """The proxy's parsed config.yaml (a mapping)."""

    def images(self) -> Sourced:
        """``list[ImageRef]`` of the stack's containers."""

    def network(self, allowed_ips: list[str]) -> NetworkView:
        """The stack's network reach, judged against the seed's network requirements."""

    def credentials(self) -> Sourced:
        """``list[StoredCredential]``."""

    def server_certificate(self) -> Sourced:
        """The server certificate's PEM bytes."""

    def token_updated_at(self) -> Sourced:
        """When the stored tunnel token was last written (aware datetime)."""


def utc(ts: float | dt.datetime) -> dt.datetime:
    if isinstance(ts, dt.datetime):
        return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(ts, dt.UTC)
