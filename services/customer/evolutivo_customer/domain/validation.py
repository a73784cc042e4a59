"""Format rules for the values an account holds: codes, zones, tags, tax identifiers."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from decimal import Decimal

import iso4217
import langcodes
import pycountry
from evolutivo_runtime.errors import InvalidArgument
from stdnum.exceptions import ValidationError
from stdnum.util import get_cc_module


def validate_currency(code: str, field: str) -> None:
    try:
        iso4217.Currency(code)
    except ValueError:
        raise InvalidArgument(field, "must be an ISO 4217 currency code such as EUR") from None


def currency_exponent(code: str) -> int:
    """Digits of the currency's minor unit (EUR 2, JPY 0, BHD 3)."""
    exponent = iso4217.Currency(code).exponent
    return int(exponent) if exponent is not None else 0


# Like balance's bound on every amount: beyond it an amount is a typo, not money.
MAX_AMOUNT = Decimal(10) ** 18


def validate_amount(amount: Decimal, currency_code: str, field: str) -> None:
    """A positive amount expressible in the currency's minor unit."""
    if amount <= 0:
        raise InvalidArgument(field, "must be greater than zero")
    if amount >= MAX_AMOUNT:
        raise InvalidArgument(field, "must be below 10^18")
    exponent = currency_exponent(currency_code)
    if amount != amount.quantize(Decimal(1).scaleb(-exponent)):
        raise InvalidArgument(field, f"must have at most {exponent} decimals in {currency_code}")


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(name: str, field: str) -> None:
    if name not in _time_zones():
        raise InvalidArgument(field, "must be an IANA time zone such as Europe/Madrid")


def validate_locale(tag: str, field: str) -> None:
    if tag and not langcodes.tag_is_valid(tag):
        raise InvalidArgument(field, "must be a BCP 47 language tag such as es-ES")


def validate_country(code: str, field: str) -> None:
    if code and (len(code) != 2 or pycountry.countries.get(alpha_2=code) is None):
        raise InvalidArgument(field, "must be an ISO 3166-1 alpha-2 country code such as ES")


# python-stdnum's names for tax identifiers, most specific first.
_TAX_ID_MODULES = ("vat", "tin", "nif", "cif", "nip", "cpf", "cnpj", "ssn", "btw", "tva")


@functools.cache
def _tax_id_check(country_code: str) -> Callable[[str], object] | None:
    for name in _TAX_ID_MODULES:
        try:
            module = get_cc_module(country_code.lower(), name)
        except (ImportError, ValueError):
            module = None
        if module is not None and hasattr(module, "validate"):
            validate: Callable[[str], object] = module.validate
            return validate
    return None


def normalise_tax_id(tax_id: str, country_code: str, field: str) -> str:
    """Validates the identifier against its country's format where one is known (python-stdnum);
    returns it trimmed. Countries without a known format accept any non-empty text."""
    tax_id = tax_id.strip()
    if not tax_id:
        return ""
    if not country_code:
        raise InvalidArgument(field, "needs country_code to be set, to check its format")
    check = _tax_id_check(country_code)
    if check is not None:
        try:
            check(tax_id)
        except ValidationError:
            raise InvalidArgument(field, f"is not a valid tax identifier for {country_code}") from None
    return tax_id
