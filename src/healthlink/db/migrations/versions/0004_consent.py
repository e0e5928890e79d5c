"""consent: SMS outbox, one-time authorisation codes and their send log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('sms_outbox',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('recipient', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sms_outbox_recipient', 'sms_outbox', ['recipient', 'created'], unique=False)
    op.create_table('consent_code',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('tries', sa.Integer(), nullable=False),
    sa.Column('used', sa.BigInteger(), nullable=True),
    sa.Column('practitioner', sa.String(length=128), nullable=False),
    sa.Column('encounter', sa.String(length=128), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    op.create_table('consent_code_issue',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('practitioner', sa.String(length=128), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_consent_code_issue_practitioner', 'consent_code_issue',
                    ['practitioner', 'created'], unique=False)
    op.create_index('ix_consent_code_issue_phone', 'consent_code_issue', ['phone', 'created'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_consent_code_issue_phone', table_name='consent_code_issue')
    op.drop_index('ix_consent_code_issue_practitioner', table_name='consent_code_issue')
    op.drop_table('consent_code_issue')
    op.drop_table('consent_code')
    op.drop_index('ix_sms_outbox_recipient', table_name='sms_outbox')
    op.drop_table('sms_outbox')
