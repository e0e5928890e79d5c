"""resource_version and the idx_* tables without their foreign keys to resource (ADR 0023)

These rows are written only by the resource store, in the transaction that writes their
resource row and with its ``rid``; resources are never deleted (a delete is a version).
Under bulk ingest the keys' checks (one look-up of ``resource`` per written row, some 13
rows per resource) cost more than the rows' own index maintenance.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 11:00:00
"""

from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

TABLES = ("resource_version", "idx_token", "idx_string", "idx_date", "idx_reference", "idx_quantity",
          "idx_number", "idx_uri")
# names the foreign keys SQLite keeps unnamed (0001 created them without a name), so batch mode finds them
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if postgres:
            op.drop_constraint(f"{table}_rid_fkey", table, type_="foreignkey")
            continue
        with op.batch_alter_table(table, naming_convention=_NAMES) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_rid_resource", type_="foreignkey")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if postgres:
            op.create_foreign_key(f"{table}_rid_fkey", table, "resource", ["rid"], ["rid"])
            continue
        with op.batch_alter_table(table, naming_convention=_NAMES) as batch_op:
            batch_op.create_foreign_key(f"fk_{table}_rid_resource", "resource", ["rid"], ["rid"])
