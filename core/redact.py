"""Secret redaction and fingerprints.

Secret values never enter the trail, logs, Slack or reports. Code that handles a
secret records ``fingerprint(value)`` instead, and every string that leaves the
process through those channels goes through a :class:`Redactor`, which removes
the configured secret values and every secret shape it knows.

The shapes come from detect-secrets (Yelp's maintained detector): the regexes of
its regex-based plugins (AWS, GitHub, GitLab, Slack, Stripe, OpenAI, SendGrid,
Twilio, npm, PyPI, Discord, Telegram, Basic-auth URL userinfo, …) and its
KeywordDetector for ``password: …`` / ``api_key = "…"`` assignments. A few shapes
it does not redact whole are added here: JWTs with all three segments (its
pattern stops after two), PEM private-key blocks (it flags only the header),
JSON/YAML/``k=v`` fields named like a token, secret, password or key (quoted or
not), ``Authorization: Basic|Bearer`` headers and the tunnel-token shapes of this
project. Entropy plugins and the public-IP plugin are left out: ids, hashes and
addresses are evidence, not secrets.

Container inspect documents and Kubernetes specs go through :func:`scrub_env`:
environment variable NAMES stay, every value becomes its fingerprint whatever its
shape — a secret of a format nobody knows is still a secret.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from ahocorasick_rs import AhoCorasick

REDACTED = "[REDACTED]"

# detect-secrets plugins whose regexes are used (entropy and public-IP are not).
_PLUGINS = (
    "AWSKeyDetector",
    "ArtifactoryDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)

# JSON / YAML / k=v fields ("token": "v", password: v, AWS_SECRET_ACCESS_KEY=v): any
# field whose name ends like a secret's, checked in Python after one fast regex.
_FIELD = re.compile(
    r"(?P<keep>[\"']?(?P<name>[A-Za-z_][\w.-]{0,60})[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?P<value>[^\s\"',}{\]\[]{3,})"
)
_FIELD_NAME = re.compile(
    r"(?i)(?:.*[_.-])?(?:token|secret|passw(?:or)?d|passwd|pwd|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|secret[_-]?key|client[_-]?secret|credentials?|auth[_-]?key|"
    r"session[_-]?key|key|apikey|authorization)"
)
_FIELD_SAFE_VALUE = re.compile(r"(?i)\[REDACTED\]|\*{3,}.*|sha256:.*|true|false|null|none|\d{1,9}")
_FIELD_HINTS = ("pass", "pwd", "secret", "token", "key", "auth", "cred")
# Shapes added to detect-secrets' (see the module docstring). A pattern with a
# group named "keep" keeps that prefix and redacts the rest of the match.
EXTRA_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Header values in Go map or JSON form, token-ish query parameters.
    re.compile(
        r"(?P<keep>(?i:(?:proxy-)?authorization|cookie|set-cookie|x-api-key|cf-access-token|"
        r'cf-access-client-secret|mcp-session-id)"?\s*[:=]\s*\[?"?)[^\]\n",}]+'
    ),
    re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        re.S,
    ),
    # A PEM block cut off by a line end (one log line): from the header on.
    re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[^\n]*"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-+/=]*"),
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    # An auth scheme and its credentials share one line; "tunnel-token\nvolumes:" is YAML.
    re.compile(
        r"(?P<keep>(?i:(?<![\w-])(?:Bearer|Basic|Digest|Token)[ \t]+))[A-Za-z0-9._~+/=\-]{6,}"
    ),
    # cloudflared / MCP tunnel tokens: base64 of a JSON object ('{"' -> 'eyJ').
    re.compile(r"\beyJ[A-Za-z0-9_\-+/=]{20,}"),
    re.compile(r"\btnltok_[A-Za-z0-9_\-]{8,}"),
    # Stops at quotes and commas so a JSON string holding "TUNNEL_TOKEN=…" stays valid JSON.
    re.compile(r"(?P<keep>(?i:\bTUNNEL_TOKEN=))[^\s\"',]+"),
    re.compile(
        r"(?P<keep>(?i:[?&](?:token|access_token|api_key|key|code|sig|signature|secret|"
        r"password)=))[^&\s\"]+"
    ),
)

_SAFE_SECRET_MIN = 6


_KEYWORDS = ("key", "pwd", "pw", "pass", "token", "secret")
# Lower-case literals one of which every match of a plugin's patterns contains: a
# pattern is tried only when its text holds one (most lines hold none). Plugins not
# listed are always tried.
_PLUGIN_HINTS: dict[str, tuple[str, ...]] = {
    "AWSKeyDetector": ("a3t", "abia", "acca", "akia", "asia", "aws"),
    "ArtifactoryDetector": ("akc", "ap"),
    "AzureStorageKeyDetector": ("accountkey=",),
    "BasicAuthDetector": ("://",),
    "CloudantDetector": _KEYWORDS + ("cloudant",),
    "GitHubTokenDetector": ("gh",),
    "GitLabTokenDetector": ("gl", "gr1348941"),
    "IbmCloudIamDetector": _KEYWORDS,
    "IbmCosHmacDetector": _KEYWORDS,
    "MailchimpDetector": ("-us",),
    "NpmDetector": ("_authtoken",),
    "OpenAIDetector": ("t3blbkfj",),
    "PypiTokenDetector": ("pypi-",),
    "SendGridDetector": ("sg.",),
    "SlackDetector": ("xox", "hooks.slack.com"),
    "SoftlayerDetector": _KEYWORDS + ("softlayer",),
    "SquareOAuthDetector": ("sq0csp-",),
    "StripeDetector": ("k_live_",),
    "TwilioKeyDetector": ("ac", "sk"),
}
_EXTRA_HINTS: tuple[tuple[str, ...], ...] = (
    ("authorization", "cookie", "x-api-key", "cf-access", "mcp-session-id"),
    ("private key",),
    ("private key",),
    ("eyj",),
    ("sk-ant-",),
    ("bearer", "basic", "digest", "token"),
    ("eyj",),
    ("tnltok_",),
    ("tunnel_token=",),
    ("?", "&"),
)


def _detect_secrets_patterns() -> tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]:
    """The denylist regexes of the detect-secrets plugins in :data:`_PLUGINS`, each
    with the hints that gate it."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    wanted = set(_PLUGINS)
    found: list[tuple[re.Pattern[str], tuple[str, ...]]] = []
    for plugin_class in get_mapping_from_secret_type_to_class().values():
        if plugin_class.__name__ in wanted:
            hints = _PLUGIN_HINTS.get(plugin_class.__name__, ())
            found.extend((p, hints) for p in getattr(plugin_class(), "denylist", ()))
    return tuple(found)


class _Shapes:
    """Built once per process: detect-secrets' patterns and its KeywordDetector."""

    _instance: _Shapes | None = None

    def __init__(self) -> None:
        from detect_secrets.plugins.keyword import KeywordDetector

        self.library = _detect_secrets_patterns()
        self.patterns = (*zip(EXTRA_PATTERNS, _EXTRA_HINTS, strict=True), *self.library)
        self.keyword = KeywordDetector()
        # Every pattern's hints found in one pass over a text (Aho-Corasick, all
        # occurrences, overlapping) instead of one ``in`` per hint per pattern.
        self.hints = sorted({hint for _, hints in self.patterns for hint in hints})
        self.hint_search = AhoCorasick(self.hints)

    def present(self, lower: str) -> set[str]:
        """The hints ``lower`` holds."""
        hints = self.hints
        return {
            hints[i]
            for i, _, _ in self.hint_search.find_matches_as_indexes(lower, overlapping=True)
        }

    @classmethod
    def get(cls) -> _Shapes:
        if cls._instance is None:
            cls._instance = _Shapes()
        return cls._instance


def warm_up() -> None:
    """Builds detect-secrets' patterns now instead of at the first redaction (once per
    process): a pre-started run process pays it before its alert (~0.3 s here)."""
    _Shapes.get()


def _replace(pattern: re.Pattern[str], value: str) -> str:
    def one(match: re.Match[str]) -> str:
        if "keep" in pattern.groupindex and match.group("keep") is not None:
            return match.group("keep") + REDACTED
        if pattern.groups and match.group(1) and len(match.group(1)) >= _SAFE_SECRET_MIN:
            start, end = match.span(1)
            whole_start = match.start()
            text = match.group(0)
            return text[: start - whole_start] + REDACTED + text[end - whole_start :]
        return REDACTED

    return pattern.sub(one, value)


# Values no secret looks like: an IP address (v4 with port or prefix, or v6). A bare
# field named "key" (a log review's grouping key, a map key) may also hold a lowercase
# host name; a field named like a credential (api_key, password, …) never keeps one.
_ADDRESS = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?:[:/]\d{1,5})?|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}"
)
_HOSTNAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}")
# A lowercase DNS-1123 name (a host, or a Kubernetes Secret key such as tunnel-token):
# what a bare "key" field holds in manifests and findings, never a credential's shape.
_K8S_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
_BARE_KEY_LINE = re.compile(r"^\s*-?\s*[\"']?(?:key|[A-Za-z_-]*[Nn]ame)[\"']?\s*[:=]")


def _field(match: re.Match[str]) -> str:
    name, value = match.group("name"), match.group("value")
    if not _FIELD_NAME.fullmatch(name) or _FIELD_SAFE_VALUE.fullmatch(value):
        return match.group(0)
    named = name.lower() == "key" or name.lower().endswith("name")
    if _ADDRESS.fullmatch(value) or (named and _K8S_NAME.fullmatch(value)):
        return match.group(0)
    return match.group("keep") + REDACTED


def fingerprint(value: str | bytes) -> str:
    """A stable, non-reversible reference to a secret: ``sha256:`` + 16 hex digits."""
    data = value.encode() if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


class Redactor:
    """Removes configured secret values and known secret shapes from text and data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | bytes | None) -> None:
        """Registers a secret value; values shorter than 6 characters are ignored
        (they would redact ordinary words)."""
        if secret is None:
            return
        text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
        text = text.strip()
        if len(text) >= _SAFE_SECRET_MIN:
            self._secrets.add(text)

    def text(self, value: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        shapes = _Shapes.get()
        present = shapes.present(value.lower())
        for pattern, hints in shapes.patterns:
            if not hints or not present.isdisjoint(hints):
                value = _replace(pattern, value)
        lower = value.lower()
        if any(hint in lower for hint in _FIELD_HINTS):
            value = _FIELD.sub(_field, value)
            value = self._keywords(value, shapes)
        return value

    @staticmethod
    def _keywords(value: str, shapes: _Shapes) -> str:
        """detect-secrets' KeywordDetector, line by line (YAML rules: ``k: v``,
        ``k = v``, ``k: "v"``)."""
        out = []
        for line in value.split("\n"):
            lower = line.lower()
            if any(hint in lower for hint in _FIELD_HINTS):
                found = shapes.keyword.analyze_line(filename="log.yaml", line=line, line_number=0)
                for secret in sorted(
                    (s.secret_value for s in found if s.secret_value), key=len, reverse=True
                ):
                    public = _ADDRESS.fullmatch(secret) or (
                        _BARE_KEY_LINE.match(line) and _K8S_NAME.fullmatch(secret)
                    )
                    if public:
                        continue
                    if len(secret) >= 3 and secret != REDACTED and REDACTED not in secret:
                        line = line.replace(secret, REDACTED)
            out.append(line)
        return "\n".join(out)

    def bytes(self, value: bytes) -> bytes:
        return self.text(value.decode("utf-8", errors="replace")).encode("utf-8")

    def data(self, value: Any) -> Any:
        """Redacts every string inside a JSON-like structure (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


_ENV_KEYS = frozenset(("Env", "env", "environment", "Environment"))


def scrub_env(document: Any) -> Any:
    """A copy of a container inspect document, Compose service or Kubernetes object
    in which every environment variable keeps its NAME and its value becomes
    ``fingerprint(value)``, whatever the value looks like.

    Handles Docker's ``Config.Env`` (``["NAME=value", …]``), Kubernetes ``env``
    (``[{"name": …, "value": …}, …]``; ``valueFrom`` references are kept) and
    Compose ``environment`` (mapping or list), at any depth.
    """
    if isinstance(document, dict):
        out: dict[Any, Any] = {}
        for key, value in document.items():
            out[key] = _env_values(value) if key in _ENV_KEYS else scrub_env(value)
        return out
    if isinstance(document, list | tuple):
        return [scrub_env(item) for item in document]
    return document


_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{16}")


def _fp(value: Any) -> str:
    """The fingerprint of an env value; an existing fingerprint stays (idempotent, so
    a document scrubbed twice keeps the same, comparable fingerprints)."""
    text = str(value)
    return text if _FINGERPRINT.fullmatch(text) else fingerprint(text)


def _env_values(value: Any) -> Any:
    if isinstance(value, dict):  # Compose mapping NAME: value
        return {k: _fp(v) if v is not None else None for k, v in value.items()}
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                name, sep, secret = item.partition("=")
                out.append(f"{name}={_fp(secret)}" if sep else item)
            elif isinstance(item, dict) and "name" in item:
                entry = {k: scrub_env(v) for k, v in item.items() if k != "value"}
                if item.get("value") is not None:
                    entry["value"] = _fp(item["value"])
                out.append(entry)
            else:
                out.append(scrub_env(item))
        return out
    return scrub_env(value)
