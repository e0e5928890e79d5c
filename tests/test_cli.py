"""The command line: the README's run path (`healthlink serve --demo`), migrations, TLS."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from servers import BIN, free_port, stop, wait_until_up
from typer.testing import CliRunner

from healthlink.cli.main import app as cli

DEMO_PATIENTS = 50  # a small generated region (HEALTHLINK_DEMO_PATIENTS) keeps `serve --demo` quick


def _serve(tmp_path: Path, extra_env: dict[str, str], scheme: str = "http"):  # noqa: ANN202
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    env.update({"HEALTHLINK_PORT": str(port), "HEALTHLINK_DATA_DIR": str(tmp_path / "var"),
                "HEALTHLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'healthlink.db'}",
                "HEALTHLINK_DEMO_PATIENTS": str(DEMO_PATIENTS), **extra_env})
    proc = subprocess.Popen([str(BIN), "serve", "--demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"{scheme}://127.0.0.1:{port}"
    wait_until_up(proc, base)
    return proc, base


_stop = stop


def test_serve_demo_prints_url_and_a_login_that_works(tmp_path):
    proc, base = _serve(tmp_path, {})
    try:
        assert httpx.get(f"{base}/fhir/metadata").json()["fhirVersion"] == "4.0.1"
        r = httpx.post(f"{base}/api/auth/login", json={"username": "doctor", "password": "demo-password-1"})
        assert r.status_code == 200
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = httpx.post(f"{base}/fhir/Patient", headers=h,
                       json={"resourceType": "Patient", "name": [{"text": "次仁卓玛"}]})
        assert r.status_code == 201
    finally:
        out = _stop(proc)
    assert f"http://127.0.0.1:{base.rsplit(':', 1)[1]}/" in out
    assert "doctor" in out and "demo-password-1" in out
    assert (tmp_path / "var" / "healthlink.db").exists()
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_serve_demo_serves_the_generated_region_in_chinese_and_english_and_loads_it_once(tmp_path):
    import re
    from collections import Counter

    from healthlink.demogen import Options
    from healthlink.demogen.region import institutions
    from healthlink.demogen.stream import patient_records

    records = list(patient_records(Options(patients=DEMO_PATIENTS, seed=1, clinical=False)))
    mine = [r for r in records if r.institution == "yushu-peoples"]  # the demo doctor's hospital
    assert mine and len(mine) < len(records)
    proc, base = _serve(tmp_path, {})
    try:
        with httpx.Client(base_url=base) as c:
            r = c.post("/api/auth/login", json={"username": "doctor", "password": "demo-password-1"})
            assert r.status_code == 200
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = c.get("/fhir/Patient", params={"organization": "yushu-peoples", "_count": 500}, headers=h)
            assert r.status_code == 200, r.text
            assert {e["resource"]["id"] for e in r.json()["entry"]} == {p.patient_id for p in mine}
            one = sorted(mine, key=lambda p: p.patient_id)[0]
            r = c.get("/fhir/Patient", params={"name": one.resource["name"][0]["text"]}, headers=h)
            assert one.patient_id in {e["resource"]["id"] for e in r.json()["entry"]}
            seen = {e["resource"]["id"] for e in c.get("/fhir/Patient", params={"_count": 500},
                                                        headers=h).json()["entry"]}
            assert seen == {p.patient_id for p in mine}  # the other hospitals' patients stay theirs
            assert c.get(f"/fhir/Organization/{one.institution}", headers=h).json()["meta"]["versionId"] == "1"

            page = c.get("/institutions")  # the login's cookie signs the page in; Chinese by default
            assert page.status_code == 200, page.text
            html = page.text
            assert 'lang="zh-CN"' in html and "机构目录" in html and "乡镇卫生院" in html
            assert Counter(re.findall(r'class="tier tier-(\w+)"', html)) == {
                "prefecture": 3, "county": 11, "township": 50}  # the generator's whole directory
            for inst in institutions():
                assert f"<code>{inst.id}</code>" in html and inst.name.split(" ")[0] in html, inst.id
            assert "玉树州妇幼保健院" in html and "珍秦镇卫生院" in html and "杂多县藏医院" in html

            csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
            page = c.post("/lang", data={"lang": "en", "csrf_token": csrf, "next": "/institutions"},
                          follow_redirects=True)
            assert page.status_code == 200 and c.cookies.get("hl_lang") == "en"
            html = page.text
            assert 'lang="en"' in html and "Institution directory" in html and "机构目录" not in html
            for label in ("Prefecture hospital", "County hospital", "Township health centre"):
                assert label in html
            assert "Yushu Prefecture Maternal and Child Health Hospital" in html
            assert "Zhenqin Town Health Centre" in html and "Zaduo County Tibetan Medicine Hospital" in html
            assert "<code>zhenqin-township</code>" in html
    finally:
        out = _stop(proc)
    assert f"loading the demo region: {DEMO_PATIENTS} Patient records (seed 1)" in out, out
    assert "demo region loaded: " in out
    # the demo patient to try patient-authorised access with: records at several institutions, a
    # verified phone whose messages are on /phone, an open encounter at the demo doctor's hospital
    demo = re.search(r"demo patient: Patient/(\S+) .* open Encounter/(\S+); .* with phone (\d+)", out)
    assert demo, out

    proc, base = _serve(tmp_path, {})  # the second start: the region is there, nothing is loaded again
    try:
        r = httpx.post(f"{base}/api/auth/login", json={"username": "doctor", "password": "demo-password-1"})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        seen = {e["resource"]["id"] for e in httpx.get(f"{base}/fhir/Patient", params={"_count": 500},
                                                        headers=h).json()["entry"]}
        assert seen == {p.patient_id for p in mine}
        assert httpx.get(f"{base}/fhir/Organization/{one.institution}", headers=h).json()["meta"]["versionId"] == "1"
        # the patient authorises the demo doctor with the code on the demo phone: the shared record
        patient, encounter, number = demo.groups()
        g = httpx.post(f"{base}/api/consent/requests", headers=h, json={
            "patient": patient, "encounter": encounter, "purpose": "demo consultation", "classes": ["*"],
            "method": "code"})
        assert g.status_code == 201, g.text
        code = re.search(r"验证码 (\d{6})", httpx.get(f"{base}/phone", params={"number": number}).text).group(1)
        r = httpx.post(f"{base}/api/consent/requests/{g.json()['id']}/code", headers=h, json={"code": code})
        assert r.status_code == 200 and r.json()["status"] == "active", r.text
        shared = httpx.get(f"{base}/fhir/Patient/{patient}/$everything", params={"_count": 1000}, headers=h).json()
        assert len({e["resource"]["meta"]["extension"][0]["valueReference"]["reference"]
                    for e in shared["entry"] if e["resource"]["resourceType"] != "Person"}) >= 2
    finally:
        again = _stop(proc)
    assert "loading the demo region" not in again and "resources written" not in again, again
    assert f"demo patient: Patient/{patient} " in again
    assert f"demo region already present: {DEMO_PATIENTS} Patient records (seed 1)" in again
    assert "demo logins already present" in again


def test_serve_speaks_https_when_a_certificate_is_configured(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    proc, base = _serve(tmp_path, {"HEALTHLINK_TLS_CERTFILE": str(tmp_path / "cert.pem"),
                                   "HEALTHLINK_TLS_KEYFILE": str(tmp_path / "key.pem")}, scheme="https")
    try:
        r = httpx.post(f"{base}/api/auth/login", verify=False,
                       json={"username": "doctor", "password": "demo-password-1"})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()
        with pytest.raises(httpx.HTTPError):
            httpx.get(base.replace("https", "http") + "/healthz", timeout=2)
    finally:
        _stop(proc)


def test_db_upgrade_and_current_on_a_new_database(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHLINK_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    runner = CliRunner()
    r = runner.invoke(cli, ["db", "current"])
    assert "empty" in r.output
    r = runner.invoke(cli, ["db", "upgrade"])
    assert r.exit_code == 0, r.output
    from alembic.script import ScriptDirectory

    from healthlink.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"revision {head}" in r.output
    assert head in runner.invoke(cli, ["db", "current"]).output


def test_bad_configuration_is_named_not_a_traceback(monkeypatch):
    monkeypatch.setenv("HEALTHLINK_SQLITE_SYNCHRONOUS", "SOMETIMES")
    r = CliRunner().invoke(cli, ["db", "current"])
    assert r.exit_code == 2
    assert "sqlite_synchronous" in r.output.lower()
