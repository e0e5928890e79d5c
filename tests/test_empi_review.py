"""EMPI review through the HTTP app on the real database: the queue of possible-duplicate
Tasks, a pair explained per field, link / keep apart / merge / unmerge / undo (each audited,
each undoable, manual decisions sticking across re-linking), the reviewer-only access, and
the review pages in both languages with CSRF."""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta

import pytest
from conftest import PASSWORD
from fastapi.testclient import TestClient
from sqlalchemy import select

from healthlink.accounts import add_user
from healthlink.db import tables as t
from healthlink.demogen.ids import check_char
from healthlink.fhir import store
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.identity import manual_constraints

pytestmark = pytest.mark.usefixtures("platform")
FHIR = "application/fhir+json"
SYLL = "扎西次仁卓玛多吉尼玛拉毛旦增央金格桑德吉索南巴桑才让"


def unique_name() -> str:
    n = uuid.uuid4().int
    return "".join(SYLL[(n >> (5 * i)) % len(SYLL)] for i in range(6))


def rid(seed: str) -> str:
    n = uuid.uuid5(uuid.NAMESPACE_OID, seed).int
    born = date(1950, 1, 1) + timedelta(days=n % 20000)
    body = f"632701{born:%Y%m%d}{(n >> 20) % 1000:03d}"
    return body + check_char(body)


def patient(name: str, *, born: str = "1986-04-12", phone: str | None = None, address: tuple[str, str] | None = None,
            ident: str | None = None) -> dict:
    p: dict = {"resourceType": "Patient", "name": [{"text": name}], "gender": "female", "birthDate": born}
    if phone:
        p["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        p["address"] = [{"text": address[0], "district": address[1]}]
    if ident:
        p["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": ident}]
    return p


def post(client, who, body: dict) -> str:  # noqa: ANN001
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers={**who.headers, "content-type": FHIR})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def review_pair(client, his_client) -> tuple[str, str]:  # noqa: ANN001
    """Two records of two institutions that score in the review band: the same name, birth
    date and sex, another phone and another address, no resident ID."""
    name = unique_name()
    pa = post(client, his_client(), patient(name, phone="13899761111", address=("结古镇民主路1号", "玉树市")))
    pb = post(client, his_client(), patient(name, phone="15809762222", address=("称多县清水河镇", "称多县")))
    return pa, pb


def same_person_pair(client, his_client) -> tuple[str, str]:  # noqa: ANN001
    """Two records the deterministic rule links (valid resident ID and birth date agree)."""
    ident = rid(str(uuid.uuid4()))
    born = f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}"
    name = unique_name()
    return (post(client, his_client(), patient(name, born=born, ident=ident)),
            post(client, his_client(), patient(name, born=born, ident=ident)))


def links(platform, *pids: str) -> dict:  # noqa: ANN001
    c = t.person_link.c
    with platform.db.read() as conn:
        return {r.patient_id: (r.person_id, r.assurance, r.method, r.score) for r in conn.execute(
            select(c.patient_id, c.person_id, c.assurance, c.method, c.score).where(c.patient_id.in_(pids)))}


def persons(platform, *person_ids: str) -> dict:  # noqa: ANN001
    """Each Person's (active, link list) and version."""
    out = {}
    with platform.db.read() as conn:
        for p in person_ids:
            body = store.read_current(conn, "Person", p)
            j = body.json()
            out[p] = (j.get("active"), sorted((lk["target"]["reference"], lk["assurance"]) for lk in j.get("link", [])),
                      body.version_id)
    return out


def state(platform, pids: tuple[str, ...], person_ids: tuple[str, ...]) -> tuple[dict, dict]:  # noqa: ANN001
    ps = persons(platform, *person_ids)
    return links(platform, *pids), {k: v[:2] for k, v in ps.items()}


def api(client, who, action: str, **body: object):  # noqa: ANN001, ANN201
    return client.post(f"/api/empi/{action}", json=body, headers=who.headers)


def open_tasks(client, reviewer, pid: str) -> list[dict]:  # noqa: ANN001
    items, cursor = [], None
    while True:
        r = client.get("/api/empi/queue", params={"count": 100, **({"cursor": cursor} if cursor else {})},
                       headers=reviewer.headers)
        assert r.status_code == 200, r.text
        items += [i for i in r.json()["items"] if pid in (i["patient"], i["candidate"])]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return items


def task_status(platform, task_id: str) -> str:  # noqa: ANN001
    with platform.db.read() as conn:
        return store.read_current(conn, "Task", task_id).json()["status"]


@pytest.fixture
def reviewer(staff):  # noqa: ANN001, ANN201
    return staff("empi_reviewer")


def test_a_pair_in_the_review_band_gets_a_task_explained_per_field(client, platform, his_client, reviewer):
    pa, pb = review_pair(client, his_client)
    assert links(platform, pa)[pa][0] != links(platform, pb)[pb][0]
    items = open_tasks(client, reviewer, pb)
    assert len(items) == 1
    item = items[0]
    assert (item["patient"], item["candidate"]) == (pb, pa)
    assert platform.identity.review < item["probability"] < platform.identity.auto_link
    assert item["patient_record"]["name"] == item["candidate_record"]["name"]
    # newest first: the latest Task is on top of the first page
    first = client.get("/api/empi/queue", params={"count": 1}, headers=reviewer.headers).json()
    assert first["items"][0]["task_id"] == item["task_id"] and first["total"] >= 1

    r = client.get("/api/empi/explain", params={"a": pa, "b": pb}, headers=reviewer.headers)
    assert r.status_code == 200, r.text
    ex = r.json()
    assert 0.5 <= ex["review"] < ex["probability"] < ex["auto_link"] <= 0.99
    assert abs(ex["probability"] - item["probability"]) < 1e-6 and not ex["deterministic"]
    by = {f["comparison"]: f for f in ex["fields"]}
    assert by["name"]["level"] == "same characters" and by["name"]["weight"] > 0
    assert by["birth_date"]["level"] == "birth_date equal"
    assert by["phone"]["weight"] < 0 and (by["phone"]["a"], by["phone"]["b"]) == ("13899761111", "15809762222")
    assert by["resident_id"]["level"] == "resident_id missing" and by["resident_id"]["weight"] == 0
    total = ex["prior_weight"] + sum(f["weight"] for f in ex["fields"])
    assert abs(total - ex["match_weight"]) < 1e-9
    assert ex["a"]["name"] == ex["b"]["name"] and ex["a"]["institution"] != ex["b"]["institution"]


def test_link_then_undo_restores_the_links_and_persons_exactly(client, platform, his_client, reviewer):
    pa, pb = review_pair(client, his_client)
    before = links(platform, pa, pb)
    x, y = before[pa][0], before[pb][0]
    versions = {k: v[2] for k, v in persons(platform, x, y).items()}
    old = state(platform, (pa, pb), (x, y))
    task = open_tasks(client, reviewer, pb)[0]["task_id"]

    r = api(client, reviewer, "link", a=pa, b=pb)
    assert r.status_code == 200, r.text
    dec = r.json()
    assert dec["kind"] == "link" and dec["moved"] == {pb: [y, x]} and dec["tasks"] == [task]
    now = links(platform, pa, pb)
    assert now[pb][:3] == (x, "level4", "manual") and platform.identity.review < now[pb][3] < 1
    ps = persons(platform, x, y)
    assert ps[x][:2] == (True, sorted([(f"Patient/{pa}", "level4"), (f"Patient/{pb}", "level4")]))
    assert ps[y][:2] == (False, [])
    assert task_status(platform, task) == "completed"
    assert ([pa, pb] in [list(p) for p in _constraints(platform).must_link])
    # a manual link is never recomputed
    _relink(platform, pb)
    assert links(platform, pb)[pb][0] == x

    r = api(client, reviewer, "undo", decision=dec["id"])
    assert r.status_code == 200, r.text
    assert r.json()["reverted"] is not None
    assert state(platform, (pa, pb), (x, y)) == old
    assert task_status(platform, task) == "requested"
    assert [pa, pb] not in [list(p) for p in _constraints(platform).must_link]
    # history is kept: each change is a new version of the Persons
    after = persons(platform, x, y)
    assert after[x][2] == versions[x] + 2 and after[y][2] == versions[y] + 2
    # undoing twice is refused
    assert api(client, reviewer, "undo", decision=dec["id"]).status_code == 409


def test_merge_then_unmerge_restores_the_previous_state_exactly(client, platform, his_client, reviewer):
    pa, pb = review_pair(client, his_client)
    x, y = links(platform, pa)[pa][0], links(platform, pb)[pb][0]
    old = state(platform, (pa, pb), (x, y))

    r = api(client, reviewer, "merge", person=x, other=y)
    assert r.status_code == 200, r.text
    merged = r.json()
    assert merged["kind"] == "merge" and (merged["person_a"], merged["person_b"]) == (x, y)
    assert {p: v[0] for p, v in links(platform, pa, pb).items()} == {pa: x, pb: x}
    ps = persons(platform, x, y)
    assert ps[y][:2] == (False, []) and len(ps[x][1]) == 2
    # a merge takes effect for the next person= query at once
    r = client.get("/fhir/Patient", params={"person": f"Person/{x}"}, headers=reviewer.headers)
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {pa, pb}

    r = api(client, reviewer, "unmerge", patient=pb)
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "unmerge" and r.json()["moved"] == {pb: [x, y]}
    assert state(platform, (pa, pb), (x, y)) == old
    assert (pb, pa) in _constraints(platform).cannot_link
    r = client.get("/fhir/Patient", params={"person": f"Person/{x}"}, headers=reviewer.headers)
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {pa}
    # merging again is possible once the unmerge is undone ... and the undo of the merge is
    # refused while the unmerge stands (its links changed since)
    assert api(client, reviewer, "undo", decision=merged["id"]).status_code == 409

    # merge then undo: the same exact restoration
    pc, pd = review_pair(client, his_client)
    u, v = links(platform, pc)[pc][0], links(platform, pd)[pd][0]
    old2 = state(platform, (pc, pd), (u, v))
    m = api(client, reviewer, "merge", person=u, other=v).json()
    assert api(client, reviewer, "undo", decision=m["id"]).status_code == 200
    assert state(platform, (pc, pd), (u, v)) == old2


def test_a_manual_keep_apart_survives_relinking(client, platform, his_client, reviewer):
    pa, pb = same_person_pair(client, his_client)
    x = links(platform, pa)[pa][0]
    assert links(platform, pb)[pb][0] == x  # linked deterministically
    r = api(client, reviewer, "keep-apart", a=pa, b=pb)
    assert r.status_code == 200, r.text
    dec = r.json()
    z = links(platform, pb)[pb][0]
    assert z != x and dec["moved"] == {pb: [x, z]}
    assert persons(platform, z)[z][:2] == (True, [(f"Patient/{pb}", "level4")])
    assert (pa, pb) in _constraints(platform).cannot_link
    # re-linking both (what every later write and the batch do) keeps them apart
    _relink(platform, pa)
    _relink(platform, pb)
    assert links(platform, pa)[pa][0] == x and links(platform, pb)[pb][0] == z
    # a third record of the same person arriving later joins one of them, never both
    with platform.db.read() as conn:
        third = store.read_current(conn, "Patient", pa).json()
    third.pop("id"), third.pop("meta")
    pc = post(client, his_client(), third)
    assert links(platform, pc)[pc][0] in (x, z)
    assert links(platform, pa)[pa][0] == x and links(platform, pb)[pb][0] == z
    # linking them by hand supersedes the keep-apart; undoing that link restores it
    r = api(client, reviewer, "link", a=pa, b=pb)
    assert r.status_code == 200 and r.json()["superseded"] == [dec["id"]]
    assert (pa, pb) not in _constraints(platform).cannot_link
    assert api(client, reviewer, "undo", decision=r.json()["id"]).status_code == 200
    assert (pa, pb) in _constraints(platform).cannot_link
    assert links(platform, pb)[pb][0] == z


def test_only_reviewers_may_use_the_queue_and_actions(client, platform, his_client, staff, reviewer, auditor):
    pa, pb = review_pair(client, his_client)
    doctor = staff("doctor")
    system_admin = staff("system_admin")
    for who in (doctor, system_admin, his_client()):
        assert client.get("/api/empi/queue", headers=who.headers).status_code == 403
        assert client.get("/api/empi/explain", params={"a": pa, "b": pb}, headers=who.headers).status_code == 403
        r = api(client, who, "link", a=pa, b=pb)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert links(platform, pa)[pa][0] != links(platform, pb)[pb][0]
    assert client.get("/api/empi/queue").status_code == 401
    # refusals are audited
    r = client.get("/fhir/AuditEvent", params={"agent": f"Practitioner/{_practitioner(client, doctor)}"},
                   headers=auditor.headers)
    refused = [e["resource"] for e in r.json().get("entry", [])]
    assert any(e["outcome"] == "4" and e["subtype"][0]["code"] == "empi-manual-link" for e in refused)
    # unknown ids are 404, bad input 422, both as problem+json
    r = api(client, reviewer, "link", a=pa, b="no-such-patient")
    assert r.status_code == 404 and r.json()["status"] == 404
    assert api(client, reviewer, "undo", decision=10**12).status_code == 404
    assert api(client, reviewer, "merge", person="x").status_code == 422
    assert client.get("/api/empi/explain", params={"a": pa, "b": "nope"}, headers=reviewer.headers).status_code == 404


def test_every_action_and_every_pair_view_leaves_an_audit_event(client, platform, his_client, reviewer, auditor):
    pa, pb = review_pair(client, his_client)
    x, y = links(platform, pa)[pa][0], links(platform, pb)[pb][0]
    client.get("/api/empi/explain", params={"a": pa, "b": pb}, headers=reviewer.headers)
    link = api(client, reviewer, "link", a=pa, b=pb).json()
    api(client, reviewer, "undo", decision=link["id"])
    api(client, reviewer, "keep-apart", a=pa, b=pb)
    api(client, reviewer, "merge", person=x, other=y)  # supersedes the keep-apart
    api(client, reviewer, "unmerge", patient=pb)
    r = client.get("/fhir/AuditEvent", params={"patient": pb, "_count": 100}, headers=auditor.headers)
    assert r.status_code == 200
    events = [e["resource"] for e in r.json()["entry"]]
    mine = [e for e in events if e["agent"][0]["who"]["display"] == reviewer.username]
    subtypes = [e["subtype"][0]["code"] for e in mine]
    for s in ("read", "empi-manual-link", "empi-undo", "empi-keep-apart", "empi-merge", "empi-unmerge"):
        assert s in subtypes, (s, subtypes)
    merge = next(e for e in mine if e["subtype"][0]["code"] == "empi-merge")
    refs = {en["what"]["reference"] for en in merge["entity"] if "what" in en}
    assert {f"Person/{x}", f"Person/{y}", f"Patient/{pa}", f"Patient/{pb}"} <= refs
    assert all(e["outcome"] == "0" for e in mine)


# ------------------------------------------------------------------ pages
def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


def signed_in(app, platform, make_institution, role: str) -> TestClient:  # noqa: ANN001
    username = f"web-{role}-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=make_institution(), practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
    c = TestClient(app, base_url="http://testserver")
    page = c.get("/login")
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text),
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def test_review_pages_in_both_languages_and_an_action_through_the_page(app, client, platform, his_client,
                                                                        make_institution):
    pa, pb = review_pair(client, his_client)
    x = links(platform, pa)[pa][0]
    c = signed_in(app, platform, make_institution, "empi_reviewer")
    home = c.get("/")
    assert 'href="/review"' in home.text and "主索引审核" in home.text
    q = c.get("/review")
    assert q.status_code == 200 and "疑似重复" in q.text and f"a={pb}&amp;b={pa}" in q.text
    pair = c.get("/review/pair", params={"a": pb, "b": pa})
    assert pair.status_code == 200 and "姓名" in pair.text and "匹配概率" in pair.text
    assert "相同汉字" in pair.text  # the level label, translated
    en = c.post("/lang", data={"lang": "en", "csrf_token": csrf_of(pair.text), "next": f"/review/pair?a={pb}&b={pa}"})
    assert en.status_code == 200 and "Match probability" in en.text and "same characters" in en.text
    assert "Keep apart" in en.text and "Link" in en.text
    # an action without the token is refused and changes nothing
    r = c.post("/review/link", data={"a": pa, "b": pb, "csrf_token": "forged"})
    assert r.status_code == 403 and links(platform, pb)[pb][0] != x
    r = c.post("/review/link", data={"a": pa, "b": pb, "csrf_token": csrf_of(en.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/review/persons/{x}"
    assert links(platform, pb)[pb][0] == x
    page = c.get(f"/review/persons/{x}")
    assert page.status_code == 200 and pb in page.text and "Unmerge" in page.text and "Undo" in page.text
    dec = re.search(r'name="decision" value="(\d+)"', page.text).group(1)
    r = c.post("/review/undo", data={"decision": dec, "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and links(platform, pb)[pb][0] != x
    zh = c.post("/lang", data={"lang": "zh-CN", "csrf_token": csrf_of(page.text), "next": f"/review/persons/{x}"})
    assert zh.status_code == 200 and "撤销" in zh.text and "已撤销" in zh.text
    # the page is for reviewers only: a doctor gets the 403 page and no menu entry
    doc = signed_in(app, platform, make_institution, "doctor")
    assert 'href="/review"' not in doc.get("/").text
    assert doc.get("/review").status_code == 403
    assert doc.get("/review/pair", params={"a": pa, "b": pb}).status_code == 403


# ------------------------------------------------------------------ helpers
def _constraints(platform):  # noqa: ANN001, ANN202
    with platform.db.read() as conn:
        mc = manual_constraints(conn)
    return type(mc)([tuple(p) for p in mc.must_link], [tuple(p) for p in mc.cannot_link])


def _relink(platform, pid: str) -> None:  # noqa: ANN001
    with platform.db.write() as conn:
        platform.identity.link_in(conn, store.read_current(conn, "Patient", pid))


def _practitioner(client, who) -> str:  # noqa: ANN001
    return client.get("/api/me", headers=who.headers).json()["practitioner"]
