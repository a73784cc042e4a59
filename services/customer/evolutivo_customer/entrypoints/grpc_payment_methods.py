"""The payment methods RPCs of CustomerService (being written: until then they answer UNIMPLEMENTED)."""

from __future__ import annotations


class PaymentMethodsApi:
    """Mixed into CustomerServicer."""
