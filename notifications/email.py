"""Email (SMTP) pages: a message to the people who must act when a gate opens or
escalates, a record is awaited, or a run fails.

Recipients are the approver group's members named in the trail record (their
``email`` in the inventory's people), plus any fixed ``to`` addresses. Resolves are
not mailed: the mail tells people to act, the trail and Slack say when it is done.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ConfigError, TransientError
from core.trail import Record
from notifications.delivery import OutboxObserver
from notifications.paging import PageEvent, event_from_payload, outbox_events
from notifications.plugins import NotifierContext


@dataclass(frozen=True)
class SmtpClient:
    host: str
    port: int = 587
    sender: str = "mcp-ir@localhost"
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    def message(self, event: PageEvent, to: list[str]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = f"[mcp-ir] {event.summary}"[:250]
        msg["Message-ID"] = make_msgid(domain="mcp-ir.local")
        msg["X-MCP-IR-Dedup-Key"] = event.dedup_key
        lines = [event.summary, ""]
        if event.step:
            lines += [
                "What to do:",
                f"  mcp-ir status {event.incident}",
            ]
            if event.dedup_key.endswith("/gate"):
                lines.append(f"  mcp-ir approve {event.incident} {event.step}   (or reject)")
            elif event.dedup_key.endswith("/record"):
                lines.append(f"  mcp-ir record {event.incident} {event.step} …")
        else:
            lines += ["What to do:", f"  mcp-ir status {event.incident}"]
        if event.details:
            lines += ["", "Details:"] + [f"  {k}: {v}" for k, v in sorted(event.details.items())]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, event: PageEvent, to: list[str]) -> None:
        """Sends one message.

        Raises:
            ConfigError: the server refused the recipients or the login (final).
            TransientError: the server could not be reached or answered 4xx (retry).
        """
        if not to:
            raise ConfigError(f"no email recipient for {event.dedup_key}")
        msg = self.message(event, to)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ConfigError(
                f"SMTP server refused every recipient: {sorted(exc.recipients)}"
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigError(f"SMTP login refused ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientError(f"SMTP server answered {exc.smtp_code} (temporary)") from None
            raise ConfigError(f"SMTP server answered {exc.smtp_code}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"SMTP server unreachable: {type(exc).__name__}") from None


class EmailConfig(BaseModel):
    """``notifiers.email`` in the inventory.

    Attributes:
        smtp_host / smtp_port: the mail server (submission port 587 by default).
        starttls: upgrade the connection with STARTTLS (default true; false only for
            a server on loopback, e.g. the sandbox).
        sender: the From address.
        username_env / password_env: environment variables holding the SMTP login.
        to: fixed recipients, in addition to the group members who must act.
        group_members: also mail the members named in the record (the approver group,
            or the escalation group), by their ``email`` in the inventory's people.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    sender: str = Field(default="mcp-ir@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    username_env: str | None = None
    password_env: str | None = None
    to: list[str] = Field(default_factory=list)
    group_members: bool = True

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address or any(c.isspace() for c in address):
                raise ValueError(f"not an email address: {address!r}")
        return value


class EmailPlugin:
    """The ``email`` notifier plugin (entry point ``mcp_ir.notifiers``)."""

    name: ClassVar[str] = "email"
    config_model: ClassVar[type[BaseModel]] = EmailConfig

    def build(self, config: EmailConfig, ctx: NotifierContext) -> OutboxObserver:
        password = os.environ.get(config.password_env, "") if config.password_env else None
        if config.password_env and not password:
            raise ConfigError(
                f"notifiers.email.password_env: environment variable {config.password_env} is not set"
            )
        if password:
            ctx.trail.redactor.add(password)
        client = SmtpClient(
            host=config.smtp_host,
            port=config.smtp_port,
            sender=config.sender,
            starttls=config.starttls,
            username=os.environ.get(config.username_env) if config.username_env else None,
            password=password,
        )

        def events(rec: Record) -> list[tuple[str, dict[str, Any]]]:
            out = []
            for key, payload in outbox_events(ctx.incident, ctx.target, rec):
                if payload["action"] != "trigger":
                    continue  # mail asks people to act; the trail and Slack say when it is done
                people = payload["recipients"] if config.group_members else []
                to = sorted({*config.to, *(ctx.emails[p] for p in people if p in ctx.emails)})
                out.append((key, {**payload, "to": to}))
            return out

        def send(payload: dict[str, Any]) -> None:
            to = payload.pop("to")
            client.send(event_from_payload(payload), to)

        return OutboxObserver("email", ctx.evidence_dir, ctx.trail, events, send)


plugin = EmailPlugin()
