"""Security: caller identities and scopes, TLS, audit log, rate limits, log redaction, encryption at rest.

See docs/security.md. Submodules are imported where used (no re-exports), to keep imports acyclic.
"""
