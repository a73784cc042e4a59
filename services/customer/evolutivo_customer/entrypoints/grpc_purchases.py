"""The purchases RPCs of CustomerService (being written: until then they answer UNIMPLEMENTED)."""

from __future__ import annotations


class PurchasesApi:
    """Mixed into CustomerServicer."""
