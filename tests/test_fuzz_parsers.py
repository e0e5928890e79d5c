"""Hypothesis over the parsers that take outside bytes (issue 9, item 3): the health code, the
bedside scanner's barcodes (GS1 element strings, traceability codes, ISBT 128, our labels), the
pack master file, NDJSON and Bundle upload files, the FHIR request body, SMART scopes, CDS Hooks
requests and the witness protocol's bodies and signed notes.

Each parser documents what it raises on bad input (the platform's own error types, all
:class:`healthlink.errors.HealthLinkError`); whatever the bytes, nothing else may escape.  No
database: these are the parsers alone, so many examples run in seconds.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from healthlink.errors import HealthLinkError, Invalid

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=25)


def pieces(*alphabet: str, max_size: int = 12):  # noqa: ANN201
    """Text assembled from meaningful fragments and arbitrary characters (finds more than text())."""
    return st.lists(st.one_of(st.sampled_from(alphabet), st.text(max_size=4)), max_size=max_size).map("".join)


# --------------------------------------------------------------------- the health code
@pytest.fixture(scope="module")
def keys():  # noqa: ANN201
    from healthlink.healthcode import KeyRing

    return KeyRing.of(Ed25519PrivateKey.generate())


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(keys, body: bytes) -> str:  # noqa: ANN001
    from healthlink.healthcode import PREFIX

    signing_input = PREFIX + _b64u(body)
    return f"{signing_input}.{_b64u(keys.signing_key.sign(signing_input.encode()))}"


@FUZZ
@given(text=st.one_of(st.text(max_size=300), pieces("HL1.", "HL2.", ".", "=", "-", "_", "AAAA", "\r\n", " ")))
@example(text="HL1." + "A" * 5000 + "." + "A" * 86)
def test_any_text_as_a_health_code_is_refused_with_a_health_code_error(keys, text):
    from healthlink.healthcode import HealthCodeError, verify_code

    with pytest.raises(HealthCodeError):
        verify_code(text, keys)


@FUZZ
@given(body=st.one_of(json_value.map(orjson.dumps), st.binary(max_size=200),
                      st.fixed_dictionaries({"k": st.text(max_size=20)}, optional={
                          "p": json_value, "i": json_value, "e": json_value, "n": json_value}).map(orjson.dumps)))
@example(body=b'{"k":"x","p":"a","i":0,"e":' + b"9" * 5000 + b',"n":"x"}')
@example(body=b"[" * 3000 + b"]" * 3000)
def test_a_validly_signed_code_with_any_body_is_read_or_refused_cleanly(keys, body):
    """Signed with the platform's own key: the body parser itself is what is fuzzed."""
    from healthlink.healthcode import HealthCode, HealthCodeError, verify_code

    body = body.replace(b'"k":', b'"k":' + json.dumps(keys.key_id).encode() + b',"_k":', 1)
    try:
        code = verify_code(_signed(keys, body), keys, now=datetime(2030, 1, 1, tzinfo=UTC))
    except HealthCodeError:
        return
    assert isinstance(code, HealthCode)


def test_a_genuine_code_still_verifies(keys):
    """The counterpart of the two above: the platform's own codes pass."""
    from healthlink.healthcode import issue_code, verify_code

    assert verify_code(issue_code(keys, "person-1", ttl_seconds=60), keys).person_id == "person-1"


# --------------------------------------------------------------------- bedside barcodes
GS1 = ("]d2", "]C1", "]Q3", "]e0", "]J1", "]E0", "]E4", "\x1d", "(01)", "(17)", "(10)", "(21)", "(8018)",
       "(7003)", "(20)", "\\(", "01", "17", "10", "21", "8018", "8019", "7003", "09506000134352",
       "00", "991231", "000000", "ABC", "0", "9", "=<", "=%", "=>", "&>", "=+", "=G", "HLW1.", "HLD1.",
       "HLT1.", "HL1.", ".", "12345678901234567890", "G123417654321A")


@FUZZ
@given(scan=st.one_of(st.text(max_size=80), pieces(*GS1, max_size=10), st.binary(max_size=60)))
@example(scan="]d2" + "01" + "0" * 14 + "17" + "000000")
@example(scan="(01)09506000134352(17)000231(10)\\(x(21)" + "9" * 200)
@example(scan="=<" + "E" * 2000)
@example(scan=b"\xff\xfe\x00")
def test_any_scan_is_read_or_refused_with_invalid(scan):
    from healthlink.medsafety import barcodes as bc

    for parse in (bc.parse_scan, bc.parse_trace_code, bc.parse_blood_unit, bc.parse_wristband,
                  bc.parse_dispense_label, bc.parse_tube_label):
        try:
            parse(scan)
        except Invalid as exc:
            assert exc.message and len(exc.message) < 2000
    try:
        bc.parse_gs1(scan if isinstance(scan, str) else scan.decode("latin-1"), today=date(2026, 1, 1))
    except Invalid:
        pass


@FUZZ
@given(raw=json_value | st.fixed_dictionaries({"packs": st.lists(st.fixed_dictionaries(
    {"id": st.text(max_size=5)}, optional={k: json_value for k in ("product", "gtins", "trace_prefixes", "strength",
                                                                   "routes", "form")}), max_size=3)}))
@example(raw={"packs": [{"id": "x", "strength": "5 mg", "gtins": 5, "routes": [{"a": 1}], "product": ["p"]}]})
def test_any_pack_master_file_is_loaded_or_refused_with_invalid(raw):
    from healthlink.medsafety import packs

    try:
        packs.parse(raw, _knowledge())
    except Invalid:
        pass


_K = []


def _knowledge():  # noqa: ANN202
    from healthlink.medsafety import knowledge

    if not _K:
        _K.append(knowledge.load())
    return _K[0]


# --------------------------------------------------------------------- upload files (ingest)
@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(lines=st.lists(st.one_of(st.binary(max_size=80), json_value.map(orjson.dumps),
                                st.fixed_dictionaries({"resourceType": st.sampled_from(["Patient", "Observation", "X"])},
                                                      optional={"id": json_value, "identifier": json_value,
                                                                "subject": json_value, "name": json_value}
                                                      ).map(orjson.dumps)), max_size=6))
@example(lines=[b'{"resourceType":"Patient","extension":' + b"[" * 300 + b"]" * 300 + b"}", b"\xff\xfe", b"[]"])
def test_any_ndjson_line_becomes_a_record_or_a_quarantine_reason(tmp_path_factory, lines):
    from healthlink.ingest.plan import inspect
    from healthlink.ingest.sources import read_records

    path = tmp_path_factory.mktemp("ndjson") / "upload.ndjson"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    records = list(read_records(path))
    assert len(records) == sum(1 for line in lines if line.replace(b"\n", b" ").decode("utf-8", "replace").strip())
    for rec in records:
        info = inspect(rec)  # never raises: a bad record has a finding (its quarantine reason)
        assert (rec.resource is not None) or info.finding is not None


# --------------------------------------------------------------------- FHIR request bodies, scopes, CDS Hooks
@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), json_value.map(orjson.dumps)))
@example(raw=b"[" * 600 + b"]" * 600)
@example(raw=b'{"a":' + b"1" * 400 + b"}")
def test_the_fhir_body_parser_raises_only_its_two_errors(raw):
    from healthlink.fhir import fhirjson

    try:
        value = fhirjson.loads(raw)
    except (orjson.JSONDecodeError, fhirjson.TooDeep):
        return
    fhirjson.dumps(value)  # whatever it accepts, the store can write


@FUZZ
@given(text=pieces("patient/", "user/", "system/", "*", ".", "read", "write", "cruds", "Patient", " ", "openid"))
def test_scope_strings_parse_or_raise_invalid(text):
    from healthlink.access.scopes import parse_scopes

    parse_scopes(text)  # lenient: never raises
    try:
        parse_scopes(text, strict=True)
    except Invalid:
        pass


@FUZZ
@given(body=json_value | st.fixed_dictionaries({"hook": st.sampled_from(["order-select", "order-sign", "x"]),
                                                 "hookInstance": json_value, "context": json_value},
                                                optional={"prefetch": json_value, "fhirServer": json_value,
                                                          "fhirAuthorization": json_value, "extension": json_value}))
def test_cds_hooks_requests_parse_or_raise_invalid(body):
    from healthlink.api.cds_routes import parse_request

    try:
        parse_request(body, hook="order-select")
    except Invalid:
        pass


# --------------------------------------------------------------------- the witness protocol
@FUZZ
@given(body=st.one_of(st.binary(max_size=300),
                      pieces("old ", "0", "1", "12", "\n", "\n\n", "AAAA", "=", "healthlink.example.org/audit-ledger",
                             "— ", "+", " ", max_size=14).map(str.encode)))
@example(body=b"old 1" + b"0" * 5000 + b"\n\n")
def test_witness_request_bodies_parse_or_raise_invalid(body):
    from healthlink.ledger.witness import parse_add_checkpoint

    try:
        size, proof, note = parse_add_checkpoint(body)
    except Invalid:
        return
    assert size >= 0 and all(len(h) == 32 for h in proof)


@FUZZ
@given(note=st.one_of(st.binary(max_size=300),
                      pieces("origin\n", "5\n", "AAAA\n", "\n", "\n\n", "\u2014 ", "name ", "AAAAAAAAAAAA", "=", " ",
                             "\x00", max_size=14)))
def test_signed_notes_open_or_raise_the_ledgers_errors(note):
    from healthlink.ledger.checkpoint import Signer, open_note, split_note

    try:
        split_note(note)
    except HealthLinkError:
        pass
    signer = Signer("healthlink.example.org/audit-ledger", Ed25519PrivateKey.generate())
    try:
        open_note(note, [signer.verifier])
    except HealthLinkError:
        pass


@FUZZ
@given(text=st.text(max_size=200))
def test_a_note_signed_by_a_trusted_key_opens_and_any_change_is_refused(text):
    from healthlink.ledger.checkpoint import NoteError, Signer, open_note, sign_note

    signer = Signer("healthlink.example.org/audit-ledger", Ed25519PrivateKey.generate())
    try:
        note = sign_note(text + "\n", signer)
    except NoteError:
        return  # control characters: refused before signing
    assert open_note(note, [signer.verifier])[0] == text + "\n"
    with pytest.raises(HealthLinkError):
        open_note("x" + note, [signer.verifier])
