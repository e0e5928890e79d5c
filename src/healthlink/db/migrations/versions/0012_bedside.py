"""bedside verification scans and their outcomes (issue 8, item 4)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 02:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bedside_event',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('flow', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('department_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner', sa.String(length=128), nullable=True),
    sa.Column('username', sa.String(length=160), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('encounter_id', sa.String(length=64), nullable=True),
    sa.Column('order_ref', sa.String(length=160), nullable=True),
    sa.Column('scan_kind', sa.String(length=16), nullable=True),
    sa.Column('unit_id', sa.String(length=160), nullable=True),
    sa.Column('failed', sa.String(length=160), nullable=True),
    sa.Column('record_ref', sa.String(length=160), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_bedside_event_inst', 'bedside_event', ['institution_id', 'at'], unique=False)
    op.create_index('ix_bedside_event_patient', 'bedside_event', ['patient_id', 'at'], unique=False)
    op.create_table('bedside_dose',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('order_ref', sa.String(length=160), nullable=True),
    sa.Column('unit_id', sa.String(length=160), nullable=False),
    sa.Column('record_ref', sa.String(length=160), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('key'))
    op.create_table('bedside_crossmatch',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('encounter_id', sa.String(length=64), nullable=True),
    sa.Column('din', sa.String(length=16), nullable=False),
    sa.Column('product_code', sa.String(length=16), nullable=False),
    sa.Column('abo', sa.String(length=4), nullable=True),
    sa.Column('rhd', sa.String(length=16), nullable=True),
    sa.Column('blood_group', sa.String(length=64), nullable=True),
    sa.Column('expiry', sa.String(length=10), nullable=True),
    sa.Column('valid_until', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('username', sa.String(length=160), nullable=True),
    sa.Column('record_ref', sa.String(length=160), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_bedside_crossmatch_patient', 'bedside_crossmatch', ['patient_id', 'status'], unique=False)
    op.create_index('ix_bedside_crossmatch_din', 'bedside_crossmatch', ['din'], unique=False)


def downgrade() -> None:
    op.drop_table('bedside_crossmatch')
    op.drop_table('bedside_dose')
    op.drop_table('bedside_event')
