"""Audit records: the AuditEvent of every patient-data access, append-only, group-committed.

The tamper-evident Merkle log over these records comes with its own issue; here the
records are made durable before any data leaves the platform.
"""

from healthlink.ledger.audit import AuditRecord, AuditWriter, Agent

__all__ = ["AuditRecord", "AuditWriter", "Agent"]
