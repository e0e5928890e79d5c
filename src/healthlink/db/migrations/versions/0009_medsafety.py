"""medication safety: order-time check findings and overrides as events

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 20:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('medsafety_event',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('check_id', sa.String(length=64), nullable=False),
    sa.Column('finding_id', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('department_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner', sa.String(length=128), nullable=True),
    sa.Column('username', sa.String(length=160), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=True),
    sa.Column('encounter_id', sa.String(length=64), nullable=True),
    sa.Column('order_ref', sa.String(length=160), nullable=True),
    sa.Column('finding_kind', sa.String(length=16), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('interrupt', sa.Boolean(), nullable=True),
    sa.Column('disclosed', sa.Boolean(), nullable=True),
    sa.Column('source_institution', sa.String(length=64), nullable=True),
    sa.Column('source_ref', sa.String(length=160), nullable=True),
    sa.Column('knowledge', sa.String(length=160), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('reason_text', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_medsafety_event_at', 'medsafety_event', ['at', 'kind'], unique=False)
    op.create_index('ix_medsafety_event_check', 'medsafety_event', ['check_id'], unique=False)
    op.create_index('ix_medsafety_event_inst', 'medsafety_event', ['institution_id', 'at'], unique=False)
    op.create_index('ix_medsafety_event_patient', 'medsafety_event', ['patient_id', 'order_ref'], unique=False)
    op.create_index('ix_medsafety_event_finding', 'medsafety_event', ['finding_id'], unique=False)


def downgrade() -> None:
    op.drop_table('medsafety_event')
