"""Audits: reconciliation of totals against the ledger, and outcome checks against a workload."""
