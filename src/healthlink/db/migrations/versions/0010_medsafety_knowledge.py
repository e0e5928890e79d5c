"""medication safety: the knowledge base in the store (issue 8, item 1)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 02:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('medsafety_knowledge',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('version', sa.String(length=160), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('files', sa.Text(), nullable=False),
    sa.Column('counts', sa.Text(), nullable=False),
    sa.Column('loaded', sa.BigInteger(), nullable=False),
    sa.Column('loaded_by', sa.String(length=160), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'))


def downgrade() -> None:
    op.drop_table('medsafety_knowledge')
