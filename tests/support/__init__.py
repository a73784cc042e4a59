"""Shared helpers for the test suites (importable as `support` because pytest puts tests/ on the path)."""
