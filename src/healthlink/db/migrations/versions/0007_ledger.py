"""tamper-evident ledger: Merkle leaves and nodes, sequencer state, checkpoints, cosignatures,
verification runs; append-only guards on the audit and ledger tables

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 17:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Tables no one may update or delete from (the audit records' entity rows, the tree, the checkpoints).
_FROZEN = ('audit_entity', 'ledger_node', 'ledger_checkpoint', 'ledger_cosignature')
_MSG = "is append-only (healthlink tamper-evident ledger)"


def upgrade() -> None:
    op.create_table('ledger_leaf',
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=1), nullable=False),
    sa.Column('audit_seq', sa.BigInteger(), nullable=True),
    sa.Column('result_rid', sa.BigInteger(), nullable=True),
    sa.Column('result_version', sa.Integer(), nullable=True),
    sa.Column('salt', sa.LargeBinary(), nullable=True),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.Column('integrated', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('idx'),
    sa.UniqueConstraint('audit_seq')
    )
    op.create_index('ix_ledger_leaf_result', 'ledger_leaf', ['result_rid', 'result_version'], unique=True)
    op.create_table('ledger_node',
    sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx')
    )
    op.create_table('ledger_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('frontier', sa.LargeBinary(), nullable=False),
    sa.Column('audit_hw', sa.BigInteger(), nullable=False),
    sa.Column('result_hw', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.Column('retention_cutoff', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ledger_checkpoint',
    sa.Column('size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root', sa.LargeBinary(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('size')
    )
    op.create_table('ledger_cosignature',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('witness', sa.String(length=255), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_ledger_cosignature_size', 'ledger_cosignature', ['size'], unique=False)
    op.create_table('ledger_verification',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('started', sa.BigInteger(), nullable=False),
    sa.Column('finished', sa.BigInteger(), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('ok', sa.Boolean(), nullable=True),
    sa.Column('first_bad', sa.BigInteger(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO ledger_state (id, size, frontier, audit_hw, result_hw, updated, retention_cutoff) "
               "VALUES (1, 0, X'', 0, 0, 0, 0)" if op.get_bind().dialect.name == 'sqlite' else
               "INSERT INTO ledger_state (id, size, frontier, audit_hw, result_hw, updated, retention_cutoff) "
               "VALUES (1, 0, ''::bytea, 0, 0, 0, 0)")
    if op.get_bind().dialect.name == 'postgresql':
        _pg_guards()
    else:
        _sqlite_guards()


# An audit record may change in one way only: the retention purge empties its body once it is older
# than the cutoff.  A ledger leaf likewise only loses its salt.
_PURGE_OK = ("NEW.content = '' AND NEW.seq = OLD.seq AND NEW.event_id = OLD.event_id "
             "AND NEW.recorded = OLD.recorded AND OLD.recorded < (SELECT retention_cutoff FROM ledger_state WHERE id = 1)")
_SALT_OK = ("NEW.salt IS NULL AND NEW.idx = OLD.idx AND NEW.kind = OLD.kind AND NEW.hash = OLD.hash "
            "AND NEW.audit_seq IS OLD.audit_seq AND NEW.result_rid IS OLD.result_rid "
            "AND NEW.result_version IS OLD.result_version AND NEW.integrated = OLD.integrated")


def _sqlite_guards() -> None:
    for table in _FROZEN + ('audit_event', 'ledger_leaf'):
        op.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
                   f"BEGIN SELECT RAISE(ABORT, '{table} {_MSG}'); END")
    for table in _FROZEN:
        op.execute(f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
                   f"BEGIN SELECT RAISE(ABORT, '{table} {_MSG}'); END")
    op.execute(f"CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event WHEN NOT ({_PURGE_OK}) "
               f"BEGIN SELECT RAISE(ABORT, 'audit_event {_MSG}'); END")
    op.execute(f"CREATE TRIGGER ledger_leaf_no_update BEFORE UPDATE ON ledger_leaf WHEN NOT ({_SALT_OK}) "
               f"BEGIN SELECT RAISE(ABORT, 'ledger_leaf {_MSG}'); END")


def _pg_guards() -> None:
    op.execute(f"""
CREATE FUNCTION healthlink_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% {_MSG}', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$""")
    op.execute(f"""
CREATE FUNCTION healthlink_audit_purge_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND {_PURGE_OK} THEN RETURN NEW; END IF;
  RAISE EXCEPTION '% {_MSG}', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$""")
    op.execute(f"""
CREATE FUNCTION healthlink_leaf_salt_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND {_SALT_OK.replace(' IS OLD.', ' IS NOT DISTINCT FROM OLD.')} THEN RETURN NEW; END IF;
  RAISE EXCEPTION '% {_MSG}', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$""")
    for table in _FROZEN:
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION healthlink_append_only()")
    op.execute("CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
               "FOR EACH ROW EXECUTE FUNCTION healthlink_audit_purge_only()")
    op.execute("CREATE TRIGGER ledger_leaf_append_only BEFORE UPDATE OR DELETE ON ledger_leaf "
               "FOR EACH ROW EXECUTE FUNCTION healthlink_leaf_salt_only()")
    for table in _FROZEN + ('audit_event', 'ledger_leaf'):
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION healthlink_append_only()")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        for table in _FROZEN + ('audit_event', 'ledger_leaf'):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        for fn in ('healthlink_append_only', 'healthlink_audit_purge_only', 'healthlink_leaf_salt_only'):
            op.execute(f"DROP FUNCTION IF EXISTS {fn}()")
    else:
        for table in _FROZEN + ('audit_event', 'ledger_leaf'):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
    op.drop_table('ledger_verification')
    op.drop_index('ix_ledger_cosignature_size', table_name='ledger_cosignature')
    op.drop_table('ledger_cosignature')
    op.drop_table('ledger_checkpoint')
    op.drop_table('ledger_state')
    op.drop_table('ledger_node')
    op.drop_index('ix_ledger_leaf_result', table_name='ledger_leaf')
    op.drop_table('ledger_leaf')
