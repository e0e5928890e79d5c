"""The electronic health code: signed rotating payloads, the QR, keys, resolvers (issue 4, part 6)."""

from __future__ import annotations

import base64
import json
import random
import re
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from healthlink.access import Actor, RequestContext
from healthlink.errors import Forbidden, Gone, HealthLinkError, Invalid
from healthlink.healthcode import (
    CLOCK_SKEW_SECONDS,
    PREFIX,
    HealthCodeError,
    HealthCodeExpired,
    HealthCodeMalformed,
    HealthCodeResolver,
    HealthCodes,
    HealthCodeUntrusted,
    KeyFileError,
    KeyRing,
    PersonRef,
    ResolverRegistry,
    UnrecognisedIdentifier,
    issue_code,
    key_id,
    load_keyring,
    public_pem,
    qr_svg,
    resolve_patient,
    verify_code,
)
from healthlink.settings import Settings

T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)
PERSON = "person-000123"


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.of(Ed25519PrivateKey.generate())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _forge(body: object, key: Ed25519PrivateKey, *, prefix: str = PREFIX) -> str:
    """A code with any body, signed the way the platform signs (to build edge cases)."""
    signing_input = prefix + _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def _flip(s: str, i: int) -> str:
    """``s`` with the base64url character at ``i`` replaced by another full-6-bit one."""
    return s[:i] + ("B" if s[i] != "B" else "C") + s[i + 1:]


def _refused(text: object, ring: KeyRing, kind: type[HealthCodeError], reason: str,
             now: datetime = T0) -> HealthCodeError:
    with pytest.raises(kind) as exc:
        verify_code(text, ring, now=now)  # type: ignore[arg-type]
    assert exc.value.reason == reason, exc.value.message
    return exc.value


# -- payload -----------------------------------------------------------------------------

def test_issued_code_verifies_and_carries_person_times_nonce_and_key_id(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    assert re.fullmatch(r"HL1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}", text)
    assert len(text) < 300  # stays a small QR
    code = verify_code(text, ring, now=T0 + timedelta(seconds=10))
    assert code.person_id == PERSON
    assert code.issued_at == T0 and code.expires_at == T0 + timedelta(seconds=300)
    assert code.key_id == ring.key_id and len(code.key_id) == 8
    assert len(_unb64(code.nonce)) == 16
    body = json.loads(_unb64(text.split(".")[1]))
    assert set(body) == {"p", "i", "e", "n", "k"}


def test_each_code_is_new_so_the_qr_rotates(ring: KeyRing) -> None:
    a, b = (issue_code(ring, PERSON, ttl_seconds=300, now=T0) for _ in range(2))
    assert a != b
    assert verify_code(a, ring, now=T0).nonce != verify_code(b, ring, now=T0).nonce


def test_surrounding_whitespace_from_a_scanner_is_ignored(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    assert verify_code(f"  {text}\r\n", ring, now=T0).person_id == PERSON


def test_expired_code_is_refused_after_ttl_plus_clock_skew(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    verify_code(text, ring, now=T0 + timedelta(seconds=299))
    verify_code(text, ring, now=T0 + timedelta(seconds=300 + CLOCK_SKEW_SECONDS - 1))  # skew
    err = _refused(text, ring, HealthCodeExpired, "expired",
                   now=T0 + timedelta(seconds=300 + CLOCK_SKEW_SECONDS))
    assert isinstance(err, Gone) and err.status == 410
    assert "expired at 2026-11-22T08:05:00+00:00" in err.message
    _refused(text, ring, HealthCodeExpired, "expired", now=T0 + timedelta(days=3))


def test_code_from_the_future_is_refused_beyond_clock_skew(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    verify_code(text, ring, now=T0 - timedelta(seconds=CLOCK_SKEW_SECONDS))
    err = _refused(text, ring, HealthCodeUntrusted, "not-yet-valid",
                   now=T0 - timedelta(seconds=CLOCK_SKEW_SECONDS + 1))
    assert "future" in err.message


def test_altered_body_is_refused_as_a_bad_signature(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    _, body, sig = text.split(".")
    # another Person, cleanly re-encoded: the body parses, the signature no longer fits
    claims = json.loads(_unb64(body))
    claims["p"] = "person-999999"
    other = f"HL1.{_b64(json.dumps(claims).encode())}.{sig}"
    err = _refused(other, ring, HealthCodeUntrusted, "bad-signature")
    assert isinstance(err, Forbidden) and err.status == 403
    assert ring.key_id in err.message and "altered" in err.message
    # a longer lifetime, same story
    claims = json.loads(_unb64(body))
    claims["e"] += 86400
    _refused(f"HL1.{_b64(json.dumps(claims).encode())}.{sig}", ring, HealthCodeUntrusted, "bad-signature")
    # one flipped character anywhere in the body text, one flipped bit in any body byte: the
    # body may no longer parse (still a bad signature) or name another key id (unknown key)
    raw = bytearray(_unb64(body))
    altered = [f"HL1.{_flip(body, i)}.{sig}" for i in range(len(body) - 1)]
    for i in range(len(raw)):
        raw2 = raw.copy()
        raw2[i] ^= 0x01
        altered.append(f"HL1.{_b64(bytes(raw2))}.{sig}")
    reasons = set()
    for text in altered:
        with pytest.raises(HealthCodeUntrusted) as exc:
            verify_code(text, ring, now=T0)
        reasons.add(exc.value.reason)
    assert reasons == {"bad-signature", "unknown-key"}


def test_altered_signature_is_refused(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    head, sig = text.rsplit(".", 1)
    raw = bytearray(_unb64(sig))
    for i in range(64):
        raw2 = raw.copy()
        raw2[i] ^= 0x80
        _refused(f"{head}.{_b64(bytes(raw2))}", ring, HealthCodeUntrusted, "bad-signature")
    _refused(f"{head}.{_flip(sig, 10)}", ring, HealthCodeUntrusted, "bad-signature")


def test_code_signed_by_another_key_is_refused(ring: KeyRing) -> None:
    other = KeyRing.of(Ed25519PrivateKey.generate())
    text = issue_code(other, PERSON, ttl_seconds=300, now=T0)
    err = _refused(text, ring, HealthCodeUntrusted, "unknown-key")
    assert other.key_id in err.message and ring.key_id in err.message
    # another key that claims to be ours
    attacker = Ed25519PrivateKey.generate()
    body = {"e": 1795334400, "i": 1795334100, "k": ring.key_id, "n": "AAAAAAAAAAAAAAAAAAAAAA", "p": PERSON}
    _refused(_forge(body, attacker), ring, HealthCodeUntrusted, "bad-signature")


def test_unknown_key_id_is_refused(ring: KeyRing) -> None:
    body = {"e": 1795334400, "i": 1795334100, "k": "00000000", "n": "AAAAAAAAAAAAAAAAAAAAAA", "p": PERSON}
    err = _refused(_forge(body, ring.signing_key), ring, HealthCodeUntrusted, "unknown-key")
    assert "'00000000'" in err.message


def test_rotated_key_still_verifies_codes_issued_before_the_rotation(ring: KeyRing) -> None:
    before = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    rotated = KeyRing.of(Ed25519PrivateKey.generate(), [ring.signing_key.public_key()])
    assert rotated.key_id != ring.key_id
    assert verify_code(before, rotated, now=T0 + timedelta(seconds=60)).key_id == ring.key_id
    after = issue_code(rotated, PERSON, ttl_seconds=300, now=T0 + timedelta(seconds=60))
    assert verify_code(after, rotated, now=T0 + timedelta(seconds=61)).key_id == rotated.key_id
    # once the previous key is dropped, its codes are refused
    _refused(before, KeyRing.of(rotated.signing_key), HealthCodeUntrusted, "unknown-key")
    # a verify-only ring (e.g. at an institution) trusts public keys and signs nothing
    verify_only = KeyRing.of(None, [rotated.signing_key.public_key()])
    assert verify_code(after, verify_only, now=T0 + timedelta(seconds=61)).person_id == PERSON
    with pytest.raises(ValueError):
        issue_code(verify_only, PERSON, ttl_seconds=300)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    (" \r\n", "empty"),
    ("HL2.eyJ9.AAAA", "version"),
    ("HL17.x.y", "version"),
    ("hl1.abc.def", "prefix"),
    ("https://example.org/?code=HL1.a.b", "prefix"),
    ("二维码", "prefix"),
    ("HL1", "prefix"),
    ("HL1.", "shape"),
    ("HL1.abcd", "shape"),
    ("HL1.ab.cd.ef", "shape"),
    ("HL1.ab!c.AAAA", "bad-base64"),
    ("HL1.abcd.AA AA", "bad-base64"),
    ("HL1.abcde.AAAA", "bad-base64"),  # 5 characters: no byte string encodes to that
    ("HL1.ab==.AAAA", "bad-base64"),   # padding is not part of the format
    ("HL1.é.AAAA", "bad-base64"),
    ("HL1.abcd.AAAA", "bad-signature-length"),
    ("HL1." + "A" * 2000, "too-long"),
    ("x" * 10_000_000, "too-long"),
])
def test_malformed_text_gets_a_clear_invalid_error(ring: KeyRing, text: str, reason: str) -> None:
    err = _refused(text, ring, HealthCodeMalformed, reason)
    assert isinstance(err, Invalid) and err.status == 400
    assert err.message and "Traceback" not in err.message


def test_empty_body_with_a_signature_of_the_right_length_is_a_bad_signature(ring: KeyRing) -> None:
    _refused("HL1.." + "A" * 86, ring, HealthCodeUntrusted, "bad-signature")


def test_non_text_and_non_canonical_base64_are_malformed(ring: KeyRing) -> None:
    _refused(None, ring, HealthCodeMalformed, "not-text")
    _refused(b"HL1.a.b", ring, HealthCodeMalformed, "not-text")
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    head, sig = text.rsplit(".", 1)
    # 64 bytes leave 2 unused bits in the last character: set one, same bytes, other text
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + last[last.index(sig[-1]) ^ 1]
    assert _unb64(twin) == _unb64(sig)
    err = _refused(f"{head}.{twin}", ring, HealthCodeMalformed, "bad-base64")
    assert "canonical" in err.message


def test_signed_body_without_the_required_fields_is_malformed(ring: KeyRing) -> None:
    key, kid = ring.signing_key, ring.key_id
    good = {"e": 1795334400, "i": 1795334100, "k": kid, "n": "AAAAAAAAAAAAAAAAAAAAAA", "p": PERSON}
    for bad in ([1, 2], "text", {"p": PERSON}, {**good, "p": "../etc/passwd"}, {**good, "p": ""},
                {**good, "i": "1795334100"}, {**good, "e": 1795334000}, {**good, "i": True},
                {**good, "e": 1.5e12}, {k: v for k, v in good.items() if k != "n"}):
        _refused(_forge(bad, key), ring, HealthCodeMalformed, "bad-body")


def test_random_damage_never_escapes_as_a_generic_exception(ring: KeyRing) -> None:
    text = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    rnd = random.Random(20261122)
    alphabet = "ABCabc019-_.=+/ \x00é二"
    for _ in range(1500):
        chars = list(text)
        for _ in range(rnd.randint(1, 3)):
            op, i = rnd.random(), rnd.randrange(len(chars))
            if op < 0.5:
                chars[i] = rnd.choice(alphabet)
            elif op < 0.75:
                del chars[i]
            else:
                chars.insert(i, rnd.choice(alphabet))
        damaged = "".join(chars)
        if damaged.strip() == text:
            continue
        with pytest.raises(HealthCodeError):
            verify_code(damaged, ring, now=T0)
    for _ in range(300):
        junk = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 300)))
        with pytest.raises(HealthCodeError):
            verify_code(PREFIX + junk, ring, now=T0)


def test_issuing_needs_a_person_id_of_the_fhir_id_shape(ring: KeyRing) -> None:
    for bad in ("", "a b", "x" * 65, "Person/1"):
        with pytest.raises(Invalid):
            issue_code(ring, bad, ttl_seconds=300)


# -- QR -----------------------------------------------------------------------------------

def _svg_modules(svg: str) -> tuple[int, set[tuple[int, int]]]:
    """(viewBox size in modules, dark modules) read back from segno's SVG path."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    scale = int(re.fullmatch(r"scale\((\d+)\)", root.find(f"{ns}g").get("transform")).group(1))
    size = int(root.get("viewBox").split()[2]) // scale
    (path,) = [p for p in root.iter(f"{ns}path") if p.get("class") == "qrline"]
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for cmd, a, b in re.findall(r"([MmHhVv])\s*(-?[\d.]+)(?:[\s,]+(-?[\d.]+))?", path.get("d")):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        elif cmd == "h":
            for col in range(int(x), int(x + float(a))):
                dark.add((int(y), col))  # a line at y + 0.5 paints row int(y)
            x += float(a)
        else:
            raise AssertionError(f"unexpected path command {cmd}")
    return size, dark


def test_qr_svg_is_a_standalone_svg_document_whose_modules_encode_the_payload(ring: KeyRing) -> None:
    payload = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    svg = qr_svg(payload)
    size, dark = _svg_modules(svg)
    # the matrix segno computes for the payload on its own, with a 4-module quiet zone
    qr = segno.make_qr(payload, error="m")
    matrix = qr.matrix
    border = (size - len(matrix)) // 2
    assert border == 4
    expected = {(r + border, c + border) for r, row in enumerate(matrix) for c, v in enumerate(row) if v}
    assert dark == expected
    assert qr.mode == "byte" and qr.error in ("M", "Q", "H")
    # nothing loaded from outside, nothing executable
    for needle in ("href", "<script", "<image", "url(", "<?xml-stylesheet", "http://www.w3.org/1999/xlink"):
        assert needle not in svg
    assert ET.fromstring(svg).find("{http://www.w3.org/2000/svg}title").text == "HealthLink health code"
    # another payload, another picture
    assert _svg_modules(qr_svg(issue_code(ring, PERSON, ttl_seconds=300, now=T0)))[1] != dark


# -- keys ---------------------------------------------------------------------------------

def test_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    first = load_keyring(settings)
    path = tmp_path / "var" / "health_code_key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()
    assert load_keyring(settings).key_id == first.key_id  # reused, not regenerated
    codes = HealthCodes.from_settings(settings)
    assert codes.ttl_seconds == 300
    issued = codes.issue(PERSON, now=T0)
    assert issued.expires_at == T0 + timedelta(seconds=300)
    assert "<svg" in issued.svg()
    assert HealthCodes.from_settings(settings).verify(issued.text, now=T0).person_id == PERSON
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["health_code_key.pem"]  # no temp left


def test_configured_key_file_ttl_and_previous_keys_come_from_settings(tmp_path: Path) -> None:
    def write(key: Ed25519PrivateKey, name: str, *, public: bool = False) -> Path:
        p = tmp_path / name
        p.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
                      if public else
                      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return p

    old, older, new = (Ed25519PrivateKey.generate() for _ in range(3))
    settings = Settings(data_dir=tmp_path / "var", health_code_key_file=write(new, "new.pem"),
                        health_code_ttl_seconds=60,
                        health_code_previous_keys=[write(old, "old.pub.pem", public=True),
                                                   write(older, "older.pem")])
    codes = HealthCodes.from_settings(settings)
    assert codes.keys.key_id == key_id(new.public_key())
    assert set(codes.keys.trusted) == {key_id(k.public_key()) for k in (new, old, older)}
    assert not (tmp_path / "var").exists()  # nothing generated when a key file is configured
    assert codes.issue(PERSON, now=T0).expires_at == T0 + timedelta(seconds=60)
    for k in (old, older):
        assert codes.verify(issue_code(KeyRing.of(k), PERSON, ttl_seconds=60, now=T0), now=T0)
    assert public_pem(old.public_key()) == (tmp_path / "old.pub.pem").read_text()


def test_bad_key_files_stop_the_start_with_a_message_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(KeyFileError, match="missing.pem"):
        load_keyring(Settings(data_dir=tmp_path, health_code_key_file=missing))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(KeyFileError, match="junk.pem"):
        load_keyring(Settings(data_dir=tmp_path, health_code_key_file=junk))
    with pytest.raises(KeyFileError, match="junk.pem"):
        load_keyring(Settings(data_dir=tmp_path, health_code_previous_keys=[junk]))


def test_health_code_ttl_setting_is_bounded() -> None:
    assert Settings().health_code_ttl_seconds == 300
    for bad in (0, 29, 86401):
        with pytest.raises(ValueError):
            Settings(health_code_ttl_seconds=bad)


# -- resolvers ----------------------------------------------------------------------------

@dataclass
class CardResolver:
    """A stand-in for a second kind of identifier (shape only; see docs/healthcode.md)."""

    name: str = "test-card"
    persons: dict[str, str] = field(default_factory=lambda: {"CARD:42": "person-42"})

    def can_resolve(self, text: str) -> bool:
        return text.startswith("CARD:")

    def resolve(self, text: str, *, now: datetime | None = None) -> PersonRef:
        return PersonRef(self.persons[text], self.name, credential=text)


@dataclass
class InMemoryPatients:
    """Stand-in for the identity service's LocalPatientResolver (not written yet)."""

    links: dict[tuple[str, str], str] = field(default_factory=dict)

    def local_patient(self, ctx: RequestContext, person_id: str, *, institution_id: str) -> str:
        return self.links.setdefault((institution_id, person_id), f"pat-{len(self.links) + 1}")


def test_registry_picks_the_resolver_by_the_presented_text(ring: KeyRing) -> None:
    registry = ResolverRegistry([HealthCodeResolver(ring), CardResolver()])
    assert registry.names == ("healthlink-health-code", "test-card")
    code = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    assert registry.resolver_for(code).name == "healthlink-health-code"
    ref = registry.resolve(code, now=T0)
    assert ref.person_id == PERSON and ref.resolver == "healthlink-health-code"
    assert ref.valid_until == T0 + timedelta(seconds=300) and code not in ref.credential
    assert registry.resolve("CARD:42").person_id == "person-42"
    # a damaged or expired health code gets the health code's own error, not "unrecognised"
    with pytest.raises(HealthCodeUntrusted):
        registry.resolve("HL1." + code[4:-8] + "AAAAAAAA", now=T0)
    with pytest.raises(HealthCodeExpired):
        registry.resolve(code, now=T0 + timedelta(hours=1))
    with pytest.raises(HealthCodeMalformed, match="version HL9"):
        registry.resolve("HL9.abc.def", now=T0)
    for text in ("", "  ", "123456789012345678", "x" * 5000):
        with pytest.raises(UnrecognisedIdentifier) as exc:
            registry.resolve(text)
        assert exc.value.status == 400
    with pytest.raises(ValueError, match="already registered"):
        registry.register(CardResolver())


def test_resolve_patient_turns_a_scan_into_the_institutions_patient(ring: KeyRing) -> None:
    registry = ResolverRegistry([HealthCodeResolver(ring)])
    patients = InMemoryPatients()
    actor = Actor("user", "clerk", "Clerk", "inst-a", frozenset({"clerk"}), ())
    ctx = RequestContext(actor=actor)
    code = issue_code(ring, PERSON, ttl_seconds=300, now=T0)
    first = resolve_patient(ctx, code, registry=registry, patients=patients, now=T0)
    assert (first.institution_id, first.person.person_id) == ("inst-a", PERSON)
    assert resolve_patient(ctx, code, registry=registry, patients=patients, now=T0).patient_id == first.patient_id
    other = resolve_patient(ctx, code, registry=registry, patients=patients, institution_id="inst-b", now=T0)
    assert other.patient_id != first.patient_id
    with pytest.raises(HealthLinkError):
        resolve_patient(RequestContext(actor=Actor.system()), code, registry=registry, patients=patients, now=T0)
    # a refused code never reaches the local-patient step
    with pytest.raises(HealthCodeExpired):
        resolve_patient(ctx, code, registry=registry, patients=patients, now=T0 + timedelta(hours=1))
    assert len(patients.links) == 2
