"""Table definitions (SQLAlchemy Core).  Alembic migrations are the source of the schema;
these definitions must match them (a test compares them).

Resource store (see docs/adr/0002-resource-store.md):

* ``resource``          the current version of every resource: the JSON as stored
                        (arrived JSON + id + meta), owner institution, patient compartment.
* ``resource_version``  every version ever written, including deletes (content NULL).
* ``idx_*``             search-parameter index rows for current versions, written in the
                        same transaction as the resource.

``resource.patient_id`` records the Patient whose compartment a resource belongs to, so a
later patient -> person link table can find a person's resources without touching them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only aliases INTEGER PRIMARY KEY to the rowid; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("rid", BigId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),  # microseconds since the epoch, UTC
    Column("deleted", Boolean, nullable=False, default=False),
    Column("institution_id", String(64)),  # owning (source) institution: Organization id
    Column("patient_id", String(64)),  # Patient compartment; own id for a Patient
    Column("content", Text),  # JSON text as served; NULL when deleted
    UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
)
Index("ix_resource_patient", resource.c.patient_id, resource.c.res_type)
Index("ix_resource_type_updated", resource.c.res_type, resource.c.last_updated)

resource_version = Table(
    "resource_version",
    metadata,
    Column("rid", BigInteger, primary_key=True),  # resource.rid; no foreign key (ADR 0023)
    Column("version_id", Integer, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),  # POST, PUT, DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("institution_id", String(64)),
    Column("content", Text),
)
Index("ix_resource_version_type_updated", resource_version.c.res_type, resource_version.c.last_updated)


def _index_table(name: str, *cols: Column, lookup: tuple[str, ...]) -> Table:
    t = Table(
        name,
        metadata,
        Column("rid", BigInteger, nullable=False),  # resource.rid; no foreign key (ADR 0023)
        Column("res_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *cols,
    )
    Index(f"ix_{name}_lookup", t.c.res_type, t.c.param, *(t.c[c] for c in lookup))
    Index(f"ix_{name}_rid", t.c.rid)
    return t


idx_token = _index_table(
    "idx_token",
    Column("system", String(255)),
    Column("code", String(255)),
    Column("text", String(255)),  # normalised display/text for :text
    lookup=("code", "system"),
)
idx_string = _index_table(
    "idx_string",
    Column("value", String(255), nullable=False),  # normalised: case- and accent-folded
    Column("exact", String(255), nullable=False),
    lookup=("value",),
)
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),  # inclusive, microseconds since epoch
    Column("high", BigInteger, nullable=False),  # inclusive
    lookup=("low", "high"),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", String(512)),  # absolute or canonical reference
    lookup=("target_id", "target_type"),
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float, nullable=False),
    Column("system", String(255)),
    Column("code", String(64)),
    lookup=("value",),
)
idx_number = _index_table("idx_number", Column("value", Float, nullable=False), lookup=("value",))
idx_uri = _index_table("idx_uri", Column("value", String(512), nullable=False), lookup=("value",))

INDEX_TABLES = {
    "token": idx_token,
    "string": idx_string,
    "date": idx_date,
    "reference": idx_reference,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
}

# Append-only audit records (AuditEvent).  Never updated or deleted by the platform.
audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("recorded", BigInteger, nullable=False),
    Column("action", String(1), nullable=False),  # C R U D E
    Column("subtype", String(32), nullable=False),  # read, search, create, login, ...
    Column("outcome", String(2), nullable=False),  # 0 4 8 12
    Column("agent_ref", String(128)),  # Practitioner/x or Device/client
    Column("username", String(128)),
    Column("institution_id", String(64)),
    Column("request_id", String(64)),
    Column("content", Text, nullable=False),  # the AuditEvent JSON
)
Index("ix_audit_event_recorded", audit_event.c.recorded)
Index("ix_audit_event_agent", audit_event.c.agent_ref)

# Which patients and resources each audit record touched (for search by patient / entity).
audit_entity = Table(
    "audit_entity",
    metadata,
    # no foreign key: these rows index each record's own content and are written only in the
    # statement that writes the record; the key's check per row cost a third of the insert (ADR 0022)
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(1), nullable=False),  # P = patient, E = other entity
    Column("ref", String(140), nullable=False),  # Type/id
)
Index("ix_audit_entity_ref", audit_entity.c.ref, audit_entity.c.kind)
Index("ix_audit_entity_seq", audit_entity.c.seq)

# Staff accounts and machine clients.
user_account = Table(
    "user_account",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("display_name", String(255), nullable=False),
    Column("practitioner_id", String(64)),
    Column("institution_id", String(64)),
    Column("department_id", String(64)),
    Column("roles", String(512), nullable=False),  # space-separated role codes
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger),
)

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("secret_hash", String(255), nullable=False),
    Column("display_name", String(255), nullable=False),
    Column("institution_id", String(64), nullable=False),
    Column("scopes", String(1024), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
)

# Bulk ingest (healthlink.ingest, docs/ingest.md): one row per upload, with its report.
ingest_upload = Table(
    "ingest_upload",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("institution_id", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("source", Text, nullable=False),  # file names, as given
    Column("started", BigInteger, nullable=False),
    Column("finished", BigInteger),
    Column("status", String(16), nullable=False),  # running, done, failed
    Column("counts", Text),  # the report (JSON)
)
Index("ix_ingest_upload_institution", ingest_upload.c.institution_id, ingest_upload.c.started)

# Records an upload could not accept, with reason and source line: nothing is dropped
# silently.  One row per distinct record of an institution (raw_hash), so a re-upload of
# the same file adds none.
ingest_quarantine = Table(
    "ingest_quarantine",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("upload_id", String(36), ForeignKey("ingest_upload.id"), nullable=False),
    Column("institution_id", String(64), nullable=False),
    Column("source_file", String(1024), nullable=False),
    Column("line", Integer, nullable=False),  # 1-based line (NDJSON) or entry number (Bundle)
    Column("res_type", String(64)),
    Column("source_id", String(128)),
    Column("reason", String(32), nullable=False),
    Column("element_path", String(512)),
    Column("message", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("raw_hash", String(64), nullable=False),
    UniqueConstraint("institution_id", "raw_hash", name="uq_ingest_quarantine_raw"),
)
Index("ix_ingest_quarantine_upload", ingest_quarantine.c.upload_id)

# Idempotency: an institution's source id ("id:<id>") or business identifier
# ("identifier:<system>|<value>") of a resource type -> the stored resource's id.
ingest_source_key = Table(
    "ingest_source_key",
    metadata,
    Column("institution_id", String(64), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("key", String(512), primary_key=True),
    Column("res_id", String(64), nullable=False),
)

# Patients created by a bulk upload, waiting for the EMPI's batch linking (a later issue).
empi_pending = Table(
    "empi_pending",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("institution_id", String(64), nullable=False),
    Column("upload_id", String(36), nullable=False),
    Column("queued", BigInteger, nullable=False),
)

# The master patient index (docs/identity.md).  Each stored Patient is linked to exactly one
# Person (a FHIR Person resource owned by the platform); the link table, not the resource
# rows, says which, so a merge or an unmerge never rewrites a Patient or its history.
person_link = Table(
    "person_link",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("person_id", String(64), nullable=False),
    Column("institution_id", String(64)),
    Column("assurance", String(8), nullable=False),  # FHIR identity-assuranceLevel: level1..level4
    Column("method", String(16), nullable=False),  # deterministic, probabilistic, new, manual
    Column("score", Float),  # match probability against the Person's best record, when scored
    Column("record", Text, nullable=False),  # the Patient's flat record (JSON), for scoring candidates
    Column("updated", BigInteger, nullable=False),
)
Index("ix_person_link_person", person_link.c.person_id)

# The candidate index of real-time linking: blocking keys of every linked Patient.
person_block = Table(
    "person_block",
    metadata,
    Column("key", String(160), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
)
Index("ix_person_block_patient", person_block.c.patient_id)

# Manual decisions of EMPI reviewers (keep apart, link); they stick across re-linking.
empi_decision = Table(
    "empi_decision",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # keep-apart, link; merge, unmerge (an action's header)
    Column("patient_a", String(64), nullable=False),
    Column("patient_b", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("reverted", BigInteger),  # when it was undone (or superseded by a later decision)
    Column("reverted_by", String(128)),
    Column("person_a", String(64)),  # a merge's surviving Person
    Column("person_b", String(64)),  # a merge's emptied Person
    Column("part_of", BigInteger),  # the action (header decision) this pair constraint belongs to
    Column("detail", Text),  # JSON: links before / after, Tasks closed, decisions superseded (for undo)
)
Index("ix_empi_decision_a", empi_decision.c.patient_a)
Index("ix_empi_decision_b", empi_decision.c.patient_b)
Index("ix_empi_decision_part_of", empi_decision.c.part_of)

# Trained matching models (the versioned artefact of healthlink.empi); one is active.
empi_model = Table(
    "empi_model",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("created", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=False),
)

# The platform's own SMS adapter (healthlink.consent.sms.OutboxGateway, docs/consent.md): messages
# "sent" land here, for the demo phone page and the CLI.  They hold live codes: a real deployment
# configures a real gateway and this table stays empty.
sms_outbox = Table(
    "sms_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recipient", String(32), nullable=False),  # the phone number ("to"; a reserved word in SQL)
    Column("text", Text, nullable=False),
    Column("purpose", String(64), nullable=False),  # what the message is for, e.g. consent-code
    Column("created", BigInteger, nullable=False),
)
Index("ix_sms_outbox_recipient", sms_outbox.c.recipient, sms_outbox.c.created)

# One-time authorisation codes (healthlink.consent.codes): one row per authorisation request, holding
# its current code as a keyed hash (HMAC-SHA256), never the code.  A resend replaces hash, created
# and expires and keeps tries, so it does not reset the wrong-try count.
consent_code = Table(
    "consent_code",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("hash", String(64), nullable=False),  # hex HMAC-SHA256 over request id and code
    Column("created", BigInteger, nullable=False),  # when the current code was issued (µs since epoch)
    Column("expires", BigInteger, nullable=False),
    Column("tries", Integer, nullable=False, default=0),  # wrong tries of the request, all codes
    Column("used", BigInteger),  # when the code was accepted; NULL until then
    Column("practitioner", String(128), nullable=False),
    Column("encounter", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
)

# Every code sent (first sends and resends): the rate limits per doctor and per phone count these.
consent_code_issue = Table(
    "consent_code_issue",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("practitioner", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("created", BigInteger, nullable=False),
)
Index("ix_consent_code_issue_practitioner", consent_code_issue.c.practitioner, consent_code_issue.c.created)
Index("ix_consent_code_issue_phone", consent_code_issue.c.phone, consent_code_issue.c.created)

# Patient portal accounts (healthlink.consent.patients, docs/consent.md "Patient accounts"): one per
# Person.  The verified phone belongs to the Person (person_phone), never to an institution's
# Patient.telecom, which the institution can edit.
patient_account = Table(
    "patient_account",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("person_id", String(64), nullable=False, unique=True),
    Column("created", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("failed_logins", Integer, nullable=False, default=0),  # wrong codes in a row, all challenges
    Column("locked_until", BigInteger),
)

person_phone = Table(
    "person_phone",
    metadata,
    Column("person_id", String(64), primary_key=True),
    Column("phone", String(32), nullable=False),
    Column("verified_at", BigInteger, nullable=False),
    Column("verified_by", String(160), nullable=False),  # sms | in-person:<staff username>
)
Index("ix_person_phone_phone", person_phone.c.phone)

# A patient account that may act for another Person (a parent for a child, a carer).
guardian = Table(
    "guardian",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("guardian_account_id", BigInteger, nullable=False),
    Column("person_id", String(64), nullable=False),
    Column("relation", String(32), nullable=False),
    Column("granted_by", String(160), nullable=False),  # in-person:<staff username> | account:<id>
    Column("created", BigInteger, nullable=False),
    Column("revoked", BigInteger),
    Column("revoked_by", String(160)),
)
Index("ix_guardian_account", guardian.c.guardian_account_id)
Index("ix_guardian_person", guardian.c.person_id)

# Sign-up, login and phone-change codes of patient accounts: one row per challenge (each send is a
# new challenge, so the rows are also the send log of the rate limits); only a keyed hash is kept.
patient_code = Table(
    "patient_code",
    metadata,
    Column("id", String(64), primary_key=True),  # the challenge id (random, given to the caller)
    Column("purpose", String(16), nullable=False),  # signup, login, phone-change
    Column("person_id", String(64), nullable=False),
    Column("phone", String(32), nullable=False),  # where the code went
    Column("new_phone", String(32)),  # sign-up: the phone to verify; phone-change: the new number
    Column("hash", String(64), nullable=False),  # hex HMAC-SHA256 over challenge id and code
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("tries", Integer, nullable=False, default=0),
    Column("used", BigInteger),
)
Index("ix_patient_code_phone", patient_code.c.phone, patient_code.c.created)
Index("ix_patient_code_person", patient_code.c.person_id, patient_code.c.created)

# Access grants (issue 5; healthlink.access.grants enforces them, healthlink.consent.grants writes
# them; docs/consent.md "Grants").  One row per authorisation request or break-the-glass; the FHIR
# Consent resource (consent_id) is the record, this row is what the repository checks on every read.
access_grant = Table(
    "access_grant",
    metadata,
    Column("id", String(64), primary_key=True),  # the request id (random); also in the Consent
    Column("consent_id", String(64), nullable=False),  # Consent resource id
    Column("kind", String(16), nullable=False),  # code | qr | in-person | break-glass
    Column("status", String(16), nullable=False),  # pending | active | refused | revoked | closed
    Column("holder", String(160), nullable=False),  # the staff username the grant is for
    Column("practitioner", String(128)),  # Practitioner/<id> of the holder
    Column("institution_id", String(64), nullable=False),  # the holder's institution
    Column("encounter_id", String(64), nullable=False),  # Encounter at that institution
    Column("patient_id", String(64), nullable=False),  # the local Patient there
    Column("person_id", String(64), nullable=False),  # the Person the patient authorised for
    Column("classes", String(255), nullable=False),  # '*' or comma-separated data classes
    Column("sensitive", String(255), nullable=False, default=""),  # included sensitive categories
    Column("purpose", String(255), nullable=False),
    Column("reason", Text),  # break-the-glass: the mandatory reason
    Column("created", BigInteger, nullable=False),  # µs since epoch
    Column("activated", BigInteger),
    Column("expires", BigInteger, nullable=False),  # pending: when the request lapses; active: the grant
    Column("ended", BigInteger),
    Column("end_reason", String(32)),  # refused | revoked | encounter-closed | consultation-closed | unmerged
    Column("ended_by", String(160)),
    Column("approved_by", String(160)),  # account:<id> | code | in-person:<clerk> | break-glass
    Column("signature", Text),  # in-person consent: the captured signature (data: URL, PNG)
    Column("reviewed", BigInteger),  # break-the-glass review by the institution's quality manager
    Column("reviewed_by", String(160)),
    Column("review_note", Text),
)
Index("ix_access_grant_holder", access_grant.c.holder, access_grant.c.status)
Index("ix_access_grant_encounter", access_grant.c.encounter_id)
Index("ix_access_grant_person", access_grant.c.person_id, access_grant.c.status)
Index("ix_access_grant_review", access_grant.c.institution_id, access_grant.c.kind, access_grant.c.reviewed)

# The tamper-evident ledger (issue 6; healthlink.ledger, docs/ledger.md, ADR 0013): an RFC 9162
# Merkle tree whose leaves are the audit records and the versions of clinical results, in the
# order the sequencer integrated them.  Append-only: database triggers refuse updates and deletes
# (migration 0007), except the retention purge of an old leaf's salt.
ledger_leaf = Table(
    "ledger_leaf",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),  # leaf index, from 0
    Column("kind", String(1), nullable=False),  # A = audit record, R = result version
    Column("audit_seq", BigInteger, unique=True),  # A: audit_event.seq
    Column("result_rid", BigInteger),  # R: resource_version.rid
    Column("result_version", Integer),  # R: resource_version.version_id
    Column("salt", LargeBinary),  # 16 random bytes; NULL once purged past retention
    Column("hash", LargeBinary, nullable=False),  # RFC 9162 leaf hash (32 bytes)
    Column("integrated", BigInteger, nullable=False),  # µs since epoch
)
Index("ix_ledger_leaf_result", ledger_leaf.c.result_rid, ledger_leaf.c.result_version, unique=True)

# Hashes of the complete (perfect) subtrees above the leaves: level >= 1, index within the level.
ledger_node = Table(
    "ledger_node",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
)

# The sequencer's state: one row (id 1): tree size, its compact range, the high-water marks.
ledger_state = Table(
    "ledger_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("frontier", LargeBinary, nullable=False),
    Column("audit_hw", BigInteger, nullable=False),  # highest audit seq integrated
    Column("result_hw", BigInteger, nullable=False),  # latest result version time integrated (µs)
    Column("updated", BigInteger, nullable=False),
    Column("retention_cutoff", BigInteger, nullable=False),  # records before this may be purged (µs)
)

# Signed tree heads (C2SP tlog-checkpoint signed notes) and witnesses' cosignatures of them.
ledger_checkpoint = Table(
    "ledger_checkpoint",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),  # the signed note as served
    Column("created", BigInteger, nullable=False),
)
ledger_cosignature = Table(
    "ledger_cosignature",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("witness", String(255), nullable=False),  # the witness's key name
    Column("line", Text, nullable=False),  # the cosignature line of the note
    Column("created", BigInteger, nullable=False),
)
Index("ix_ledger_cosignature_size", ledger_cosignature.c.size)

# Runs of `healthlink ledger verify` (for the audit administrator's status page).
ledger_verification = Table(
    "ledger_verification",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("started", BigInteger, nullable=False),
    Column("finished", BigInteger),
    Column("size", BigInteger),
    Column("ok", Boolean),
    Column("first_bad", BigInteger),
    Column("message", Text),
)

# Mutual recognition (issue 7; healthlink.recognition, docs/recognition.md).  The catalogue files
# a region loaded (the newest active one is in force), which institutions are qualified for which
# items, and the decision events every rate is computed from.
recognition_catalogue = Table(
    "recognition_catalogue",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", Text, nullable=False),  # the catalogue file as loaded (JSON)
    Column("items", Integer, nullable=False),
    Column("loaded", BigInteger, nullable=False),  # µs since epoch
    Column("loaded_by", String(160), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)
recognition_qualification = Table(
    "recognition_qualification",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("institution_id", String(64), nullable=False),  # Organization id
    Column("item_id", String(64), nullable=False),  # catalogue item id, or '*' for every item
    Column("basis", String(32), nullable=False),  # eqa | qc-centre
    Column("valid_from", Date, nullable=False),  # first day qualified (region's calendar)
    Column("valid_to", Date),  # last day qualified; NULL: until further notice
    Column("reference", String(255)),  # certificate / EQA round
    Column("recorded", BigInteger, nullable=False),
    Column("recorded_by", String(160), nullable=False),
)
Index("ix_recognition_qualification", recognition_qualification.c.institution_id,
      recognition_qualification.c.item_id)
recognition_event = Table(
    "recognition_event",
    metadata,
    Column("id", String(64), primary_key=True),  # uuid hex; a reminder's id is its card's uuid
    Column("at", BigInteger, nullable=False),  # µs since epoch
    Column("kind", String(16), nullable=False),  # checked | reminded | opened | adopted | declined | reordered
    Column("check_id", String(64), nullable=False),  # the order line's check (groups its events)
    Column("card_id", String(64)),  # the reminder an opened/adopted/declined event answers
    Column("channel", String(16), nullable=False),  # cds | api | web | demo
    Column("institution_id", String(64), nullable=False),  # ordering institution
    Column("tier", String(16)),  # its tier
    Column("department_id", String(64)),
    Column("practitioner", String(128)),  # Practitioner/<id> ordering
    Column("username", String(160)),
    Column("patient_id", String(64), nullable=False),
    Column("person_id", String(64)),
    Column("encounter_id", String(64)),
    Column("order_ref", String(160)),  # the draft order (ServiceRequest/<id>) or local code
    Column("item_id", String(64)),  # catalogue item ordered (NULL: not in the catalogue)
    Column("found", Boolean),  # checked: a recognisable result was found
    Column("own", Boolean),  # reminded: the result is from the ordering institution itself
    Column("disclosed", Boolean),  # reminded: values shown (own or under a grant) or a hint only
    Column("source_institution", String(64)),
    Column("source_ref", String(160)),  # Observation/... | DiagnosticReport/... of the result
    Column("price_fen", BigInteger),  # the item's price in fen (1/100 yuan)
    Column("reason", String(32)),  # declined: reason code
    Column("reason_text", Text),
    Column("local_ref", String(160)),  # adopted: the recognised result written in the encounter
    Column("detail", Text),  # reminded: the card's hit (JSON) for later decisions
)
Index("ix_recognition_event_at", recognition_event.c.at, recognition_event.c.kind)
Index("ix_recognition_event_check", recognition_event.c.check_id)
Index("ix_recognition_event_inst", recognition_event.c.institution_id, recognition_event.c.at)
Index("ix_recognition_event_order", recognition_event.c.patient_id, recognition_event.c.order_ref)
Index("ix_recognition_event_card", recognition_event.c.card_id)

# Medication safety (issue 8; healthlink.medsafety, docs/medsafety.md).  The order-time checks and
# the prescriber's overrides as append-only events: a ``checked`` event per check, a ``finding``
# event per finding (its id is the finding's uuid; ``detail`` keeps what the server needs, such as
# the record behind a hint, which is never shown before access is granted), an ``overridden`` event
# per override with its reason.
medsafety_event = Table(
    "medsafety_event",
    metadata,
    Column("id", String(64), primary_key=True),  # uuid hex; a finding's id is its event's id
    Column("at", BigInteger, nullable=False),  # µs since epoch
    Column("kind", String(16), nullable=False),  # checked | finding | overridden
    Column("check_id", String(64), nullable=False),  # the check (groups its events)
    Column("finding_id", String(64)),  # the finding an override answers
    Column("channel", String(16), nullable=False),  # cds | api | web | demo
    Column("institution_id", String(64), nullable=False),  # ordering institution
    Column("department_id", String(64)),
    Column("practitioner", String(128)),  # Practitioner/<id> ordering
    Column("username", String(160)),
    Column("patient_id", String(64), nullable=False),
    Column("person_id", String(64)),
    Column("encounter_id", String(64)),
    Column("order_ref", String(160)),  # the draft MedicationRequest (MedicationRequest/<id>) or code
    Column("finding_kind", String(16)),  # interaction | allergy | duplicate | dose
    Column("severity", String(16)),  # contraindicated | major | moderate | minor
    Column("interrupt", Boolean),  # the finding interrupted the prescriber (tiering in force)
    Column("disclosed", Boolean),  # the record it concerns was shown (own / granted) or only hinted
    Column("source_institution", String(64)),  # where the record it concerns is recorded
    Column("source_ref", String(160)),  # that record (MedicationRequest/<id> ...): server side only
    Column("knowledge", String(160)),  # knowledge entry ids (interaction, group, class, dose limit)
    Column("reason", String(32)),  # overridden: reason code
    Column("reason_text", Text),
    Column("detail", Text),  # finding: the finding as JSON (and server-side fields)
)
Index("ix_medsafety_event_at", medsafety_event.c.at, medsafety_event.c.kind)
Index("ix_medsafety_event_check", medsafety_event.c.check_id)
Index("ix_medsafety_event_inst", medsafety_event.c.institution_id, medsafety_event.c.at)
Index("ix_medsafety_event_patient", medsafety_event.c.patient_id, medsafety_event.c.order_ref)
Index("ix_medsafety_event_finding", medsafety_event.c.finding_id)
# The knowledge base in force (issue 8, item 1; healthlink.medsafety.store): every knowledge file
# loaded (the bundled default, a region's replacement, or the bundled base extended by a region's or
# vendor's files) is kept whole as the validated, merged JSON with its version, SHA-256, what it was
# built from and who loaded it; the newest active row is in force.
medsafety_knowledge = Table(
    "medsafety_knowledge",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(160), nullable=False),
    Column("sha256", String(64), nullable=False),  # of ``content``
    Column("content", Text, nullable=False),  # the knowledge in force as JSON (merged when extended)
    Column("mode", String(16), nullable=False),  # default | replace | extend
    Column("files", Text, nullable=False),  # JSON list: {name, sha256, version, role} of the files loaded
    Column("counts", Text, nullable=False),  # JSON: Knowledge.counts()
    Column("loaded", BigInteger, nullable=False),  # µs since epoch
    Column("loaded_by", String(160), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)

# Regional prescription pre-review (issue 8, item 3; healthlink.medsafety.prereview,
# docs/prereview.md).  One row per submitted prescription with its automatic problems and the
# pharmacist's decision; the orders it carries (``outcome(order_ref)`` reads the latest); and an
# append-only event per step, which the statistics and the dashboard count.
prereview_prescription = Table(
    "prereview_prescription",
    metadata,
    Column("id", String(64), primary_key=True),  # uuid hex
    Column("institution_id", String(64), nullable=False),  # the submitting institution
    Column("department_id", String(64)),
    Column("practitioner", String(128)),  # Practitioner/<id>: the prescriber
    Column("username", String(160)),
    Column("patient_id", String(64), nullable=False),
    Column("person_id", String(64)),
    Column("encounter_id", String(64)),
    Column("submitted_at", BigInteger, nullable=False),  # µs since epoch
    Column("day", String(10), nullable=False),  # the region's calendar day of submission
    # auto-passed | pending | passed | returned | double-sign-required | double-signed | timed-out
    Column("status", String(24), nullable=False),
    Column("max_level", Integer, nullable=False),  # highest problem level (0: none)
    Column("queued", Boolean, nullable=False),  # went to the pharmacist queue
    Column("escalated", Boolean, nullable=False, default=False),  # overdue under the "hold" policy
    Column("decided_at", BigInteger),  # the pharmacist's decision or the timeout
    Column("decided_by", String(160)),
    Column("reason", String(32)),  # return / double-signature reason code
    Column("reason_text", Text),
    Column("countersigned_at", BigInteger),
    Column("countersign_text", Text),
    Column("problems", Text, nullable=False),  # JSON: [Problem]
    Column("lines", Text, nullable=False),  # JSON: [{order_ref, name, ingredients}]
)
Index("ix_prereview_status", prereview_prescription.c.status, prereview_prescription.c.submitted_at)
Index("ix_prereview_inst_day", prereview_prescription.c.institution_id, prereview_prescription.c.day)
Index("ix_prereview_patient", prereview_prescription.c.patient_id)

prereview_order = Table(
    "prereview_order",
    metadata,
    Column("order_ref", String(160), primary_key=True),  # MedicationRequest/<id> (or the HIS's ref)
    Column("prescription_id", String(64), primary_key=True),
    Column("submitted_at", BigInteger, nullable=False),
)
Index("ix_prereview_order_ref", prereview_order.c.order_ref, prereview_order.c.submitted_at)

prereview_event = Table(
    "prereview_event",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("prescription_id", String(64), nullable=False),
    # submitted | auto-passed | queued | passed | returned | double-sign-required | double-signed
    # | timed-out | escalated
    Column("kind", String(24), nullable=False),
    Column("institution_id", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("username", String(160)),
    Column("reason", String(32)),
    Column("text", Text),
)
Index("ix_prereview_event_rx", prereview_event.c.prescription_id)
Index("ix_prereview_event_inst", prereview_event.c.institution_id, prereview_event.c.day)

# Bedside verification (issue 8, item 4; healthlink.medsafety.bedside, docs/medsafety.md "Bedside
# verification").  Every scan at the bedside, passed or blocked, as an append-only event (the failed
# pairs by name, the comparison as JSON); one row per dose, unit or tube recorded (the key makes a
# second record of the same dose impossible); the units crossmatched for a patient (the blood bank's
# answer, standing in for a BiologicallyDerivedProduct the platform does not keep).
bedside_event = Table(
    "bedside_event",
    metadata,
    Column("id", String(64), primary_key=True),  # uuid hex
    Column("at", BigInteger, nullable=False),  # µs since epoch
    Column("flow", String(16), nullable=False),  # wristband | medication | transfusion | specimen
    Column("outcome", String(16), nullable=False),  # passed | blocked | recorded | already-recorded
    Column("institution_id", String(64), nullable=False),
    Column("department_id", String(64)),
    Column("practitioner", String(128)),  # Practitioner/<id> scanning
    Column("username", String(160)),
    Column("patient_id", String(64)),  # the wristband's Patient (None: the wristband was refused)
    Column("encounter_id", String(64)),
    Column("order_ref", String(160)),  # MedicationRequest/<id>, ServiceRequest/<id>, crossmatch/<id>
    Column("scan_kind", String(16)),  # wristband | pack | trace-code | dispense-label | blood-unit | tube-label
    Column("unit_id", String(160)),  # GTIN/serial, traceability code, DIN, tube/<order>
    Column("failed", String(160)),  # blocked: the failed pairs, comma-separated
    Column("record_ref", String(160)),  # MedicationAdministration/<id>, Procedure/<id>, Specimen/<id>
    Column("detail", Text),  # the verification as JSON (pairs with expected and scanned)
)
Index("ix_bedside_event_inst", bedside_event.c.institution_id, bedside_event.c.at)
Index("ix_bedside_event_patient", bedside_event.c.patient_id, bedside_event.c.at)

bedside_dose = Table(
    "bedside_dose",
    metadata,
    Column("key", String(255), primary_key=True),  # order_ref@scheduled time (UTC) | crossmatch/<id> | ServiceRequest/<id>
    Column("institution_id", String(64), nullable=False),
    Column("order_ref", String(160)),
    Column("unit_id", String(160), nullable=False),  # the unit that was given / collected
    Column("record_ref", String(160), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
)

bedside_crossmatch = Table(
    "bedside_crossmatch",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("institution_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("encounter_id", String(64)),
    Column("din", String(16), nullable=False),  # ISBT 128 donation identification number (13 characters)
    Column("product_code", String(16), nullable=False),
    Column("abo", String(4)),
    Column("rhd", String(16)),
    Column("blood_group", String(64)),
    Column("expiry", String(10)),  # the unit's expiry date (YYYY-MM-DD)
    Column("valid_until", BigInteger, nullable=False),  # the crossmatch's validity, µs since epoch
    Column("status", String(16), nullable=False),  # ready | transfused | cancelled
    Column("username", String(160)),
    Column("record_ref", String(160)),  # the transfusion Procedure once given
)
Index("ix_bedside_crossmatch_patient", bedside_crossmatch.c.patient_id, bedside_crossmatch.c.status)
Index("ix_bedside_crossmatch_din", bedside_crossmatch.c.din)

# The leaders' dashboard (issue 10; healthlink.dashboard, docs/dashboard.md).  Daily counts per
# institution, department, metric and key, computed from the store and the event tables and
# refreshed incrementally: each source's days from its high-water mark (less a margin for late
# commits) are recounted, the older days are kept.  Page views read only these rows.
dashboard_daily = Table(
    "dashboard_daily",
    metadata,
    Column("institution_id", String(64), primary_key=True),
    Column("day", Integer, primary_key=True, autoincrement=False),  # days since 1970-01-01, region calendar
    Column("source", String(24), primary_key=True),  # resource | recognition | medsafety | prereview | ...
    Column("department_id", String(64), primary_key=True),  # '' when the source has none
    Column("metric", String(32), primary_key=True),
    Column("key", String(64), primary_key=True),  # '' or a breakdown: type, severity, reason, item
    Column("value", BigInteger, nullable=False),
)
Index("ix_dashboard_daily_metric", dashboard_daily.c.metric, dashboard_daily.c.day)
Index("ix_dashboard_daily_source", dashboard_daily.c.source, dashboard_daily.c.day)
# The same counts per calendar month (``day``: the month's first day), rolled up from the daily rows
# the refresh touched: a long period reads its whole months here and only its partial months' days.
dashboard_monthly = Table(
    "dashboard_monthly",
    metadata,
    Column("institution_id", String(64), primary_key=True),
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("source", String(24), primary_key=True),
    Column("department_id", String(64), primary_key=True),
    Column("metric", String(32), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
Index("ix_dashboard_monthly_metric", dashboard_monthly.c.metric, dashboard_monthly.c.day)
Index("ix_dashboard_monthly_source", dashboard_monthly.c.source, dashboard_monthly.c.day)

# Each source's high-water mark (µs since epoch: the start of its last refresh) and the figures
# kept as a snapshot (EMPI persons per institution: counted whole at most every few minutes).
dashboard_state = Table(
    "dashboard_state",
    metadata,
    Column("source", String(24), primary_key=True),
    Column("hw", BigInteger, nullable=False),
    Column("refreshed", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),  # how long its last refresh took
)
dashboard_snapshot = Table(
    "dashboard_snapshot",
    metadata,
    Column("metric", String(32), primary_key=True),
    Column("institution_id", String(64), primary_key=True),  # '' for the region
    Column("value", BigInteger, nullable=False),
    Column("taken", BigInteger, nullable=False),
)
# the dashboard's incremental recount of grants reads the recent ones by creation time
Index("ix_access_grant_created", access_grant.c.created)
