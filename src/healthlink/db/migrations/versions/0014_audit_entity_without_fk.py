"""audit_entity without its foreign key to audit_event (ADR 0022)

The entity rows are an index of each record's own content, written only in the statement that
writes the record; the key's check ran once per entity row (some 14 rows per order-time check)
and cost a third of the audit insert.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 19:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_MSG = "is append-only (healthlink tamper-evident ledger)"  # as migration 0007's guards
# names the foreign key SQLite keeps unnamed (0001 created it without a name), so batch mode finds it
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("audit_entity_seq_fkey", "audit_entity", type_="foreignkey")
        return
    with op.batch_alter_table("audit_entity", naming_convention=_NAMES) as batch_op:
        batch_op.drop_constraint("fk_audit_entity_seq_audit_event", type_="foreignkey")
    _sqlite_guards()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key("audit_entity_seq_fkey", "audit_entity", "audit_event", ["seq"], ["seq"])
        return
    with op.batch_alter_table("audit_entity", naming_convention=_NAMES) as batch_op:
        batch_op.create_foreign_key("fk_audit_entity_seq_audit_event", "audit_event", ["seq"], ["seq"])
    _sqlite_guards()


def _sqlite_guards() -> None:
    """SQLite's batch mode rebuilt the table without its triggers: the append-only guards of
    migration 0007 again (PostgreSQL's stay, its table is altered in place)."""
    for what in ("DELETE", "UPDATE"):
        op.execute(f"CREATE TRIGGER audit_entity_no_{what.lower()} BEFORE {what} ON audit_entity "
                   f"BEGIN SELECT RAISE(ABORT, 'audit_entity {_MSG}'); END")
