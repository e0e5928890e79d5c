"""mutual recognition: loaded catalogues, qualified issuers, decision events

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('recognition_catalogue',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.Column('loaded', sa.BigInteger(), nullable=False),
    sa.Column('loaded_by', sa.String(length=160), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'))
    op.create_table('recognition_qualification',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=64), nullable=False),
    sa.Column('basis', sa.String(length=32), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_to', sa.Date(), nullable=True),
    sa.Column('reference', sa.String(length=255), nullable=True),
    sa.Column('recorded', sa.BigInteger(), nullable=False),
    sa.Column('recorded_by', sa.String(length=160), nullable=False),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_recognition_qualification', 'recognition_qualification',
                    ['institution_id', 'item_id'], unique=False)
    op.create_table('recognition_event',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('check_id', sa.String(length=64), nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=True),
    sa.Column('department_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner', sa.String(length=128), nullable=True),
    sa.Column('username', sa.String(length=160), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=True),
    sa.Column('encounter_id', sa.String(length=64), nullable=True),
    sa.Column('order_ref', sa.String(length=160), nullable=True),
    sa.Column('item_id', sa.String(length=64), nullable=True),
    sa.Column('found', sa.Boolean(), nullable=True),
    sa.Column('own', sa.Boolean(), nullable=True),
    sa.Column('disclosed', sa.Boolean(), nullable=True),
    sa.Column('source_institution', sa.String(length=64), nullable=True),
    sa.Column('source_ref', sa.String(length=160), nullable=True),
    sa.Column('price_fen', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('reason_text', sa.Text(), nullable=True),
    sa.Column('local_ref', sa.String(length=160), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_recognition_event_at', 'recognition_event', ['at', 'kind'], unique=False)
    op.create_index('ix_recognition_event_check', 'recognition_event', ['check_id'], unique=False)
    op.create_index('ix_recognition_event_inst', 'recognition_event', ['institution_id', 'at'], unique=False)
    op.create_index('ix_recognition_event_order', 'recognition_event', ['patient_id', 'order_ref'], unique=False)
    op.create_index('ix_recognition_event_card', 'recognition_event', ['card_id'], unique=False)


def downgrade() -> None:
    op.drop_table('recognition_event')
    op.drop_table('recognition_qualification')
    op.drop_table('recognition_catalogue')
