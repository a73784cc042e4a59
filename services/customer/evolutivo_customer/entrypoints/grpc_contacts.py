"""The contacts RPCs of CustomerService (being written: until then they answer UNIMPLEMENTED)."""

from __future__ import annotations


class ContactsApi:
    """Mixed into CustomerServicer."""
