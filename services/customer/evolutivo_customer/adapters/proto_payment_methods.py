"""Translation between payment methods and evolutivo.customer.v1.PaymentMethod.

Only masked methods are turned into messages: `payment_method_to_pb` masks whatever it is given."""

from __future__ import annotations

from evolutivo.customer.v1 import payment_method_pb2
from evolutivo_runtime.timestamps import from_date, to_date, to_timestamp

from evolutivo_customer.domain.payment_methods import (
    BankTransferDetails,
    CardDetails,
    PaymentDetails,
    PaymentMethod,
    PayOnInvoiceDetails,
    SepaDirectDebitDetails,
)

_PREFIX = "payment_method"


def details_from_pb(pb: payment_method_pb2.PaymentMethod) -> PaymentDetails | None:
    """The caller's values, unvalidated (the domain checks them); None when no type is set."""
    match pb.WhichOneof("details"):
        case "card":
            c = pb.card
            return CardDetails(
                provider=c.provider,
                provider_token=c.provider_token,
                brand=c.brand,
                last4=c.last4,
                expiry_month=c.expiry_month,
                expiry_year=c.expiry_year,
            )
        case "sepa_direct_debit":
            s = pb.sepa_direct_debit
            return SepaDirectDebitDetails(
                iban=s.iban,
                bic=s.bic,
                mandate_id=s.mandate_id,
                mandate_signature_date=(
                    from_date(s.mandate_signature_date, f"{_PREFIX}.sepa_direct_debit.mandate_signature_date")
                    if s.HasField("mandate_signature_date")
                    else None
                ),
                account_holder=s.account_holder,
            )
        case "bank_transfer":
            return BankTransferDetails(payment_reference=pb.bank_transfer.payment_reference)
        case "pay_on_invoice":
            return PayOnInvoiceDetails()
    return None


def payment_method_to_pb(method: PaymentMethod) -> payment_method_pb2.PaymentMethod:
    """Masked: the IBAN keeps its country, check digits and last four; the card token its last four."""
    masked = method.masked()
    pb = payment_method_pb2.PaymentMethod(
        payment_method_id=str(masked.payment_method_id),
        account_id=str(masked.account_id),
        is_default=masked.is_default,
        create_time=to_timestamp(masked.create_time),
    )
    match masked.details:
        case CardDetails() as c:
            pb.card.CopyFrom(
                payment_method_pb2.CardDetails(
                    provider=c.provider,
                    provider_token=c.provider_token,
                    brand=c.brand,
                    last4=c.last4,
                    expiry_month=c.expiry_month,
                    expiry_year=c.expiry_year,
                )
            )
        case SepaDirectDebitDetails() as s:
            pb.sepa_direct_debit.CopyFrom(
                payment_method_pb2.SepaDirectDebitDetails(
                    iban=s.iban,
                    bic=s.bic,
                    mandate_id=s.mandate_id,
                    mandate_signature_date=to_date(s.mandate_signature_date),
                    account_holder=s.account_holder,
                )
            )
        case BankTransferDetails() as b:
            pb.bank_transfer.CopyFrom(payment_method_pb2.BankTransferDetails(payment_reference=b.payment_reference))
        case PayOnInvoiceDetails():
            pb.pay_on_invoice.SetInParent()
    return pb
