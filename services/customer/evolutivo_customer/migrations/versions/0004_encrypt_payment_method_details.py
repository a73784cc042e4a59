"""Payment-method details encrypted at rest: `payment_methods.details` becomes a Fernet token (bytea)
of the JSON document it held (docs/customer.md, "Payment methods at rest").

Existing rows are encrypted here with the first key of CUSTOMER_PAYMENT_DETAILS_KEYS, so run
`migrate` with the same setting as `serve`. A database with no payment methods needs no key;
one with rows and no key stops the migration (nothing changed) rather than keep them in clear.
Downgrade decrypts them back with the same setting.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_customer.settings import CustomerSettings
from evolutivo_runtime.security.crypto import EncryptionKeyError, FieldCipher
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _cipher() -> FieldCipher:
    keys = CustomerSettings().payment_details_keys.get_secret_value()
    if not keys.strip():
        raise EncryptionKeyError(
            "payment_methods has rows to encrypt or decrypt: set CUSTOMER_PAYMENT_DETAILS_KEYS for the migration"
        )
    return FieldCipher.from_setting(keys)


def upgrade() -> None:
    op.add_column("payment_methods", sa.Column("details_token", sa.LargeBinary))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT payment_method_id, details::text FROM payment_methods")).all()
    if rows:
        cipher = _cipher()
        for method_id, document in rows:
            bind.execute(
                sa.text("UPDATE payment_methods SET details_token = :token WHERE payment_method_id = :id"),
                {"token": cipher.encrypt(document.encode()), "id": method_id},
            )
    op.drop_column("payment_methods", "details")
    op.alter_column("payment_methods", "details_token", new_column_name="details", nullable=False)


def downgrade() -> None:
    op.add_column("payment_methods", sa.Column("details_json", postgresql.JSONB))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT payment_method_id, details FROM payment_methods")).all()
    if rows:
        cipher = _cipher()
        for method_id, token in rows:
            bind.execute(
                sa.text(
                    "UPDATE payment_methods SET details_json = CAST(:document AS jsonb) WHERE payment_method_id = :id"
                ),
                {"document": cipher.decrypt(bytes(token)).decode(), "id": method_id},
            )
    op.drop_column("payment_methods", "details")
    op.alter_column("payment_methods", "details_json", new_column_name="details", nullable=False)
