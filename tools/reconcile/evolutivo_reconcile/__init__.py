"""Reconciliation of the five services' books (docs/reconciliation.md)."""

from evolutivo_reconcile.checks import DatabaseUrls, reconcile, urls_from_environment
from evolutivo_reconcile.report import Difference, Report

__all__ = ["DatabaseUrls", "Difference", "Report", "reconcile", "urls_from_environment"]
