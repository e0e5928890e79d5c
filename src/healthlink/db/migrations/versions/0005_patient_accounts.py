"""patient accounts: accounts bound to a Person, the Person's verified phone, guardians, codes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('patient_account',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('person_id')
    )
    op.create_table('person_phone',
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=False),
    sa.Column('verified_at', sa.BigInteger(), nullable=False),
    sa.Column('verified_by', sa.String(length=160), nullable=False),
    sa.PrimaryKeyConstraint('person_id')
    )
    op.create_index('ix_person_phone_phone', 'person_phone', ['phone'], unique=False)
    op.create_table('guardian',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('guardian_account_id', sa.BigInteger(), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('relation', sa.String(length=32), nullable=False),
    sa.Column('granted_by', sa.String(length=160), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('revoked', sa.BigInteger(), nullable=True),
    sa.Column('revoked_by', sa.String(length=160), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_guardian_account', 'guardian', ['guardian_account_id'], unique=False)
    op.create_index('ix_guardian_person', 'guardian', ['person_id'], unique=False)
    op.create_table('patient_code',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=False),
    sa.Column('new_phone', sa.String(length=32), nullable=True),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('tries', sa.Integer(), nullable=False),
    sa.Column('used', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_patient_code_phone', 'patient_code', ['phone', 'created'], unique=False)
    op.create_index('ix_patient_code_person', 'patient_code', ['person_id', 'created'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_patient_code_person', table_name='patient_code')
    op.drop_index('ix_patient_code_phone', table_name='patient_code')
    op.drop_table('patient_code')
    op.drop_index('ix_guardian_person', table_name='guardian')
    op.drop_index('ix_guardian_account', table_name='guardian')
    op.drop_table('guardian')
    op.drop_index('ix_person_phone_phone', table_name='person_phone')
    op.drop_table('person_phone')
    op.drop_table('patient_account')
