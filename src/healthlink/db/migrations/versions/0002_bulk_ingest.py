"""bulk ingest: uploads, quarantine, source keys, EMPI pending queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:05:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ingest_upload',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('started', sa.BigInteger(), nullable=False),
    sa.Column('finished', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('counts', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ingest_upload', schema=None) as batch_op:
        batch_op.create_index('ix_ingest_upload_institution', ['institution_id', 'started'], unique=False)

    op.create_table('ingest_quarantine',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('upload_id', sa.String(length=36), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('source_file', sa.String(length=1024), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=True),
    sa.Column('source_id', sa.String(length=128), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('element_path', sa.String(length=512), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('raw_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['ingest_upload.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('institution_id', 'raw_hash', name='uq_ingest_quarantine_raw')
    )
    with op.batch_alter_table('ingest_quarantine', schema=None) as batch_op:
        batch_op.create_index('ix_ingest_quarantine_upload', ['upload_id'], unique=False)

    op.create_table('ingest_source_key',
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('institution_id', 'res_type', 'key')
    )
    op.create_table('empi_pending',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('upload_id', sa.String(length=36), nullable=False),
    sa.Column('queued', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('patient_id')
    )


def downgrade() -> None:
    op.drop_table('empi_pending')
    op.drop_table('ingest_source_key')
    with op.batch_alter_table('ingest_quarantine', schema=None) as batch_op:
        batch_op.drop_index('ix_ingest_quarantine_upload')
    op.drop_table('ingest_quarantine')
    with op.batch_alter_table('ingest_upload', schema=None) as batch_op:
        batch_op.drop_index('ix_ingest_upload_institution')
    op.drop_table('ingest_upload')
