"""Shared runtime for the Evolutivo services.

Transport, persistence plumbing and messaging only: no domain model, no business rule and no
table of any service lives here (the outbox and inbox tables are defined here but created in
each service's own database by its own migrations).
"""
