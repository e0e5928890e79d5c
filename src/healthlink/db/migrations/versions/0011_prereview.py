"""regional prescription pre-review centre (issue 8, item 3)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 02:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prereview_prescription',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('department_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner', sa.String(length=128), nullable=True),
    sa.Column('username', sa.String(length=160), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=True),
    sa.Column('encounter_id', sa.String(length=64), nullable=True),
    sa.Column('submitted_at', sa.BigInteger(), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('max_level', sa.Integer(), nullable=False),
    sa.Column('queued', sa.Boolean(), nullable=False),
    sa.Column('escalated', sa.Boolean(), nullable=False),
    sa.Column('decided_at', sa.BigInteger(), nullable=True),
    sa.Column('decided_by', sa.String(length=160), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('reason_text', sa.Text(), nullable=True),
    sa.Column('countersigned_at', sa.BigInteger(), nullable=True),
    sa.Column('countersign_text', sa.Text(), nullable=True),
    sa.Column('problems', sa.Text(), nullable=False),
    sa.Column('lines', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_prereview_status', 'prereview_prescription', ['status', 'submitted_at'], unique=False)
    op.create_index('ix_prereview_inst_day', 'prereview_prescription', ['institution_id', 'day'], unique=False)
    op.create_index('ix_prereview_patient', 'prereview_prescription', ['patient_id'], unique=False)
    op.create_table('prereview_order',
    sa.Column('order_ref', sa.String(length=160), nullable=False),
    sa.Column('prescription_id', sa.String(length=64), nullable=False),
    sa.Column('submitted_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('order_ref', 'prescription_id'))
    op.create_index('ix_prereview_order_ref', 'prereview_order', ['order_ref', 'submitted_at'], unique=False)
    op.create_table('prereview_event',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('prescription_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('username', sa.String(length=160), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_prereview_event_rx', 'prereview_event', ['prescription_id'], unique=False)
    op.create_index('ix_prereview_event_inst', 'prereview_event', ['institution_id', 'day'], unique=False)


def downgrade() -> None:
    op.drop_table('prereview_event')
    op.drop_table('prereview_order')
    op.drop_table('prereview_prescription')
