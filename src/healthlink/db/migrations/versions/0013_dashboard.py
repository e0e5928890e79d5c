"""the leaders' dashboard: pre-aggregated indicator counts (issue 10)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 06:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None



def upgrade() -> None:
    op.create_table('dashboard_daily',
    sa.Column('source', sa.String(length=24), nullable=False),
    sa.Column('day', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('department_id', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('institution_id', 'day', 'source', 'department_id', 'metric', 'key'))
    op.create_index('ix_dashboard_daily_metric', 'dashboard_daily', ['metric', 'day'], unique=False)
    op.create_index('ix_dashboard_daily_source', 'dashboard_daily', ['source', 'day'], unique=False)
    op.create_table('dashboard_monthly',
    sa.Column('source', sa.String(length=24), nullable=False),
    sa.Column('day', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('department_id', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('institution_id', 'day', 'source', 'department_id', 'metric', 'key'))
    op.create_index('ix_dashboard_monthly_metric', 'dashboard_monthly', ['metric', 'day'], unique=False)
    op.create_index('ix_dashboard_monthly_source', 'dashboard_monthly', ['source', 'day'], unique=False)
    op.create_table('dashboard_state',
    sa.Column('source', sa.String(length=24), nullable=False),
    sa.Column('hw', sa.BigInteger(), nullable=False),
    sa.Column('refreshed', sa.BigInteger(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('source'))
    op.create_table('dashboard_snapshot',
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('taken', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('metric', 'institution_id'))
    op.create_index('ix_access_grant_created', 'access_grant', ['created'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_access_grant_created', table_name='access_grant')
    op.drop_table('dashboard_snapshot')
    op.drop_table('dashboard_state')
    op.drop_index('ix_dashboard_monthly_source', table_name='dashboard_monthly')
    op.drop_index('ix_dashboard_monthly_metric', table_name='dashboard_monthly')
    op.drop_table('dashboard_monthly')
    op.drop_index('ix_dashboard_daily_source', table_name='dashboard_daily')
    op.drop_index('ix_dashboard_daily_metric', table_name='dashboard_daily')
    op.drop_table('dashboard_daily')
