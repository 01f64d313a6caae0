"""Email (SMTP) pages: a message to the people who must act when a gate opens or
escalates, a record is awaited, or a run fails.

Recipients are the approver group's members named in the trail record (their
``email`` in the inventory's people), plus any fixed ``to`` addresses. Resolves are
not mailed: the mail tells people to act, the trail and Slack say when it is done.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

from core.errors import ConfigError, TransientError
from notifications.paging import PageEvent


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
