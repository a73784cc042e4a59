"""Sends bills' and collections notices' emails: over SMTP (aiosmtplib), or, with no SMTP server
configured, as .eml files in a folder (the local stack's outbox). Both take the same `Email` and
build the same message.

`send` returns the recipients the server refused (the others accepted it) and raises when nobody
accepted it, so the delivery retries (service_layer.delivery.Mailer)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import aiosmtplib

from evolutivo_billing.domain.delivery import Email


def to_message(email: Email) -> EmailMessage:
    """The MIME message: text body, the PDF attached (when there is one), and a Message-ID that is
    the same for every copy of the bill's or notice's email (receivers can drop a duplicate)."""
    message = EmailMessage()
    message["From"] = email.sender
    message["To"] = ", ".join(email.recipients)
    message["Subject"] = email.subject
    message["Message-ID"] = email.message_id
    if email.date is not None:
        message["Date"] = format_datetime(email.date)
    message.set_content(email.text)
    if email.attachment_name:
        maintype, _, subtype = email.attachment_type.partition("/")
        message.add_attachment(email.attachment, maintype=maintype, subtype=subtype, filename=email.attachment_name)
    return message


@dataclass(frozen=True)
class SmtpMailer:
    """BILLING_SMTP_HOST / PORT / USERNAME / PASSWORD / STARTTLS / TIMEOUT_SECONDS."""

    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = True
    timeout: float = 30.0

    async def send(self, email: Email) -> list[str]:
        errors, _ = await aiosmtplib.send(
            to_message(email),
            sender=email.sender,
            recipients=list(email.recipients),
            hostname=self.host,
            port=self.port,
            username=self.username or None,
            password=self.password or None,
            start_tls=self.starttls,
            timeout=self.timeout,
        )
        return sorted(errors)


@dataclass(frozen=True)
class DirectoryMailer:
    """Writes each email to `<folder>/<message id>.eml` (BILLING_DELIVERY_OUTBOX_DIR): what would
    have been sent, for a person to open. A second copy overwrites the first."""

    folder: Path

    async def send(self, email: Email) -> list[str]:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", email.message_id.strip("<>")) + ".eml"
        data = to_message(email).as_bytes()
        await asyncio.to_thread(self._write, self.folder / name, data)
        return []

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".eml.partial")
        partial.write_bytes(data)
        partial.replace(path)  # a reader never sees half a file
