"""identity: Person links, candidate index, manual EMPI decisions, matching models

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('person_link',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=True),
    sa.Column('assurance', sa.String(length=8), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('patient_id')
    )
    op.create_index('ix_person_link_person', 'person_link', ['person_id'], unique=False)
    op.create_table('person_block',
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('key', 'patient_id')
    )
    op.create_index('ix_person_block_patient', 'person_block', ['patient_id'], unique=False)
    op.create_table('empi_decision',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('patient_a', sa.String(length=64), nullable=False),
    sa.Column('patient_b', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('reverted', sa.BigInteger(), nullable=True),
    sa.Column('reverted_by', sa.String(length=128), nullable=True),
    sa.Column('person_a', sa.String(length=64), nullable=True),
    sa.Column('person_b', sa.String(length=64), nullable=True),
    sa.Column('part_of', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_empi_decision_a', 'empi_decision', ['patient_a'], unique=False)
    op.create_index('ix_empi_decision_b', 'empi_decision', ['patient_b'], unique=False)
    op.create_index('ix_empi_decision_part_of', 'empi_decision', ['part_of'], unique=False)
    op.create_table('empi_model',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )


def downgrade() -> None:
    op.drop_table('empi_model')
    op.drop_index('ix_empi_decision_part_of', table_name='empi_decision')
    op.drop_index('ix_empi_decision_b', table_name='empi_decision')
    op.drop_index('ix_empi_decision_a', table_name='empi_decision')
    op.drop_table('empi_decision')
    op.drop_index('ix_person_block_patient', table_name='person_block')
    op.drop_table('person_block')
    op.drop_index('ix_person_link_person', table_name='person_link')
    op.drop_table('person_link')
