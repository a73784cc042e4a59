"""Loads and stores contacts (being written: see the issue's note)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


class ContactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
