"""Payment-method details encrypted at rest, against a real customer database: the stored bytes
hold no IBAN and reads return it; rotation (old keys still decrypt, writes and `rotate` use the
newest); migration 0004 encrypting rows stored in clear; no key, no service."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import evolutivo_customer
import pytest
from alembic import command
from cryptography.fernet import Fernet
from evolutivo_customer.adapters import events
from evolutivo_customer.adapters.orm import outbox, payment_methods, request_log
from evolutivo_customer.domain.model import AccountDetails, AccountType
from evolutivo_customer.domain.payment_methods import SepaDirectDebitDetails
from evolutivo_customer.entrypoints.app import details_cipher
from evolutivo_customer.service_layer import accounts
from evolutivo_customer.service_layer import payment_methods as methods
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork
from evolutivo_customer.settings import CustomerSettings
from evolutivo_runtime.migrations import alembic_config, upgrade_to_head
from evolutivo_runtime.security.crypto import EncryptionKeyError, FieldCipher, Undecryptable, generate_key
from pydantic import SecretStr
from sqlalchemy import select, text
from support.customer import CustomerServiceDb
from support.databases import EmptyDatabase, MigratedDatabase

MIGRATIONS = Path(evolutivo_customer.__file__).resolve().parent / "migrations"
NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
IBAN = "ES9121000418450200051332"
OLD_KEY = generate_key()
NEW_KEY = generate_key()


class KeyedDb(CustomerServiceDb):
    """The customer database with the payment-details keys of the test's choosing."""

    keys: tuple[str, ...] = (OLD_KEY,)

    def uow(self) -> CustomerUnitOfWork:
        cipher = FieldCipher(list(self.keys))
        return CustomerUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log, details_cipher=cipher)

    async def stored(self) -> dict[uuid.UUID, bytes]:
        return {r.payment_method_id: bytes(r.details) for r in await self.rows(select(payment_methods))}


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[KeyedDb]:
    async with KeyedDb.open(await migrated_database("customer", MIGRATIONS), NOW) as database:
        database.keys = (OLD_KEY,)
        yield database


def sepa(iban: str = IBAN) -> SepaDirectDebitDetails:
    return SepaDirectDebitDetails(
        iban=iban,
        bic="CAIXESBBXXX",
        mandate_id="MANDATE-0001",
        mandate_signature_date=date(2031, 5, 2),
        account_holder="Ana López",
    )


async def add_sepa(db: KeyedDb, iban: str = IBAN) -> tuple[uuid.UUID, uuid.UUID]:
    async with db.uow() as uow:
        account = await accounts.create_account(
            uow,
            AccountType.BUSINESS,
            AccountDetails(
                display_name="Acme Distribuciones SL",
                currency_code="EUR",
                time_zone="Europe/Madrid",
                locale="es-ES",
                country_code="ES",
            ),
            None,
        )
        method = await methods.add_payment_method(uow, account.account_id, sepa(iban), make_default=True)
        await uow.commit()
    return account.account_id, method.payment_method_id


async def read_ibans(db: KeyedDb, account_id: uuid.UUID) -> list[str]:
    async with db.uow() as uow:
        found = await uow.payment_methods.for_account(account_id)
    return [m.details.iban for m in found if isinstance(m.details, SepaDirectDebitDetails)]


async def test_stored_details_hold_no_iban_and_reads_return_it(db: KeyedDb) -> None:
    account_id, method_id = await add_sepa(db)

    stored = (await db.stored())[method_id]
    assert IBAN.encode() not in stored
    assert b"MANDATE-0001" not in stored and "López".encode() not in stored
    # The column is a Fernet token under the configured key, not a JSON document.
    assert b"ES91" in Fernet(OLD_KEY.encode()).decrypt(stored)
    assert await read_ibans(db, account_id) == [IBAN]


async def test_rotation_old_key_decrypts_new_writes_and_rotate_use_the_new_key(db: KeyedDb) -> None:
    first_account, _ = await add_sepa(db)
    db.keys = (
        NEW_KEY,
        OLD_KEY,
    )

    # A row written under the old key still reads; a new one is written under the new key only.
    assert await read_ibans(db, first_account) == [IBAN]
    second_account, second = await add_sepa(db, "DE89370400440532013000")
    with pytest.raises(Exception):  # noqa: B017 - InvalidToken: the old key does not open it
        Fernet(OLD_KEY.encode()).decrypt((await db.stored())[second])
    assert b"DE89" in Fernet(NEW_KEY.encode()).decrypt((await db.stored())[second])

    # Rotating re-encrypts every row under the newest key (in batches); then the old key can go.
    assert await methods.rotate_payment_details(db.uow, batch_size=1) == 2
    for token in (await db.stored()).values():
        Fernet(NEW_KEY.encode()).decrypt(token)
    db.keys = (NEW_KEY,)
    assert await read_ibans(db, first_account) == [IBAN]
    assert await read_ibans(db, second_account) == ["DE89370400440532013000"]

    # A key dropped before rotating makes the rows unreadable, loudly.
    db.keys = (generate_key(),)
    with pytest.raises(Undecryptable):
        await read_ibans(db, first_account)


async def test_migration_encrypts_rows_stored_in_clear(
    empty_database: EmptyDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await empty_database("customer")
    await asyncio.to_thread(command.upgrade, alembic_config(MIGRATIONS, url), "0003")
    account_id, method_id = uuid.uuid4(), uuid.uuid4()
    async with KeyedDb.open(url, NOW) as db:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO accounts (account_id, account_number, type, display_name, currency_code,"
                    " time_zone, locale, status, bill_cycle_day, billing_frequency, payment_terms_days,"
                    " labels, create_time) VALUES (:id, 'A-1', 'business', 'Acme', 'EUR', 'Europe/Madrid',"
                    " 'es-ES', 'active', 1, 'monthly', 30, '{}', :now)"
                ),
                {"id": account_id, "now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO payment_methods (payment_method_id, account_id, type, is_default, details,"
                    " create_time) VALUES (:id, :account, 'sepa_direct_debit', true, CAST(:details AS jsonb), :now)"
                ),
                {
                    "id": method_id,
                    "account": account_id,
                    "now": NOW,
                    "details": json.dumps(
                        {
                            "iban": IBAN,
                            "bic": "CAIXESBBXXX",
                            "mandate_id": "M-1",
                            "mandate_signature_date": "2031-05-02",
                            "account_holder": "Ana",
                        }
                    ),
                },
            )

        # Rows in clear and no key: the migration stops and changes nothing.
        monkeypatch.delenv("CUSTOMER_PAYMENT_DETAILS_KEYS", raising=False)
        with pytest.raises(EncryptionKeyError, match="CUSTOMER_PAYMENT_DETAILS_KEYS"):
            await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
        assert await db.scalar(text("SELECT version_num FROM alembic_version")) == "0003"

        monkeypatch.setenv("CUSTOMER_PAYMENT_DETAILS_KEYS", OLD_KEY)
        await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
        await db.engine.dispose()  # the column changed type under the pool's cached statements
        db.keys = (OLD_KEY,)
        assert IBAN.encode() not in (await db.stored())[method_id]
        assert await read_ibans(db, account_id) == [IBAN]


def test_the_service_does_not_start_without_a_key() -> None:
    with pytest.raises(EncryptionKeyError, match="CUSTOMER_PAYMENT_DETAILS_KEYS is not set"):
        details_cipher(CustomerSettings(payment_details_keys=SecretStr("")))
    with pytest.raises(EncryptionKeyError, match=r"CUSTOMER_PAYMENT_DETAILS_KEYS: .*not a valid Fernet key"):
        details_cipher(CustomerSettings(payment_details_keys=SecretStr("not-a-key")))
    assert details_cipher(CustomerSettings(payment_details_keys=SecretStr(f"{NEW_KEY}, {OLD_KEY}"))) is not None
