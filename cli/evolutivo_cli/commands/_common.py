"""Helpers shared by the resource commands."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from evolutivo_cli.errors import CliError

T = TypeVar("T")

LIMIT_HELP = "at most this many (pages are followed)"
Limit = typer.Option("--limit", "-n", min=1, max=100_000, help=LIMIT_HELP)
RequestId = typer.Option(
    "--request-id", help="idempotency key (AIP-155): the same id returns the first result; a new UUID by default"
)


def request_id(given: str | None) -> str:
    return given or str(uuid.uuid4())


def paginate(fetch: Callable[[str, int], Any], field: str, limit: int) -> tuple[list[Any], str]:
    """Calls ``fetch(page_token, page_size)`` until ``limit`` items or the last page; returns the
    items and the token of the next page ("" when there is none)."""
    items: list[Any] = []
    token = ""
    while True:
        page = fetch(token, min(1000, limit - len(items)))
        items.extend(getattr(page, field))
        token = page.next_page_token
        if not token or len(items) >= limit:
            return items[:limit], token


def enum_option(descriptor: Any, choice: str | None, what: str) -> Any:
    from evolutivo_cli.render import enum_value

    if not choice:
        return 0
    try:
        return enum_value(descriptor, choice)
    except ValueError as exc:
        raise CliError(f"{what}: {exc}") from None


def more(token: str, shown: int) -> str | None:
    return f"{shown} shown; more exist (raise --limit)" if token else None
