"""access grants: patient-authorised access and break-the-glass; data-class and sensitivity labels

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:30:00
"""

from alembic import op
import orjson
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('access_grant',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('consent_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('holder', sa.String(length=160), nullable=False),
    sa.Column('practitioner', sa.String(length=128), nullable=True),
    sa.Column('institution_id', sa.String(length=64), nullable=False),
    sa.Column('encounter_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('classes', sa.String(length=255), nullable=False),
    sa.Column('sensitive', sa.String(length=255), nullable=False),
    sa.Column('purpose', sa.String(length=255), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('activated', sa.BigInteger(), nullable=True),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('ended', sa.BigInteger(), nullable=True),
    sa.Column('end_reason', sa.String(length=32), nullable=True),
    sa.Column('ended_by', sa.String(length=160), nullable=True),
    sa.Column('approved_by', sa.String(length=160), nullable=True),
    sa.Column('signature', sa.Text(), nullable=True),
    sa.Column('reviewed', sa.BigInteger(), nullable=True),
    sa.Column('reviewed_by', sa.String(length=160), nullable=True),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_access_grant_holder', 'access_grant', ['holder', 'status'], unique=False)
    op.create_index('ix_access_grant_encounter', 'access_grant', ['encounter_id'], unique=False)
    op.create_index('ix_access_grant_person', 'access_grant', ['person_id', 'status'], unique=False)
    op.create_index('ix_access_grant_review', 'access_grant', ['institution_id', 'kind', 'reviewed'],
                    unique=False)
    _label_existing()


def _label_existing() -> None:
    """Stored resources get the label rows new writes get (healthlink.fhir.labels, written by
    healthlink.fhir.indexing as the `_class` and `_sensitive` tokens)."""
    from healthlink.fhir.indexing import label_rows

    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(sa.text(
            "SELECT rid, res_type, content FROM resource WHERE rid > :a AND deleted = :f "
            "ORDER BY rid LIMIT 2000"), {"a": after, "f": False}).all()
        if not rows:
            return
        out = []
        for rid, res_type, content in rows:
            if content:
                for r in label_rows(orjson.loads(content)):
                    out.append({**r, "rid": rid, "res_type": res_type})
        if out:
            conn.execute(sa.text(
                "INSERT INTO idx_token (rid, res_type, param, system, code, text) "
                "VALUES (:rid, :res_type, :param, :system, :code, :text)"), out)
        after = rows[-1][0]


def downgrade() -> None:
    op.execute("DELETE FROM idx_token WHERE param IN ('_class', '_sensitive')")
    op.drop_index('ix_access_grant_review', table_name='access_grant')
    op.drop_index('ix_access_grant_person', table_name='access_grant')
    op.drop_index('ix_access_grant_encounter', table_name='access_grant')
    op.drop_index('ix_access_grant_holder', table_name='access_grant')
    op.drop_table('access_grant')
