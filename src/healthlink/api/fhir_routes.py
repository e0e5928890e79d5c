"""FHIR R4 REST adapter under /fhir: parse, call the repository, render.  No SQL, no
access checks here (STYLE.md: adapters are thin)."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Depends, Header, Request
from starlette.responses import Response

from healthlink.access import Repository
from healthlink.access import bundles
from healthlink.api.capability import capability_statement
from healthlink.api.deps import CurrentPlatform, Repo
from healthlink.errors import Invalid, Issue, MethodNotAllowed, PayloadTooLarge
from healthlink.fhir import fhirjson
from healthlink.fhir.dates import from_us
from healthlink.fhir.search import Page, apply_elements
from healthlink.fhir.store import Stored

FHIR_JSON = "application/fhir+json"
router = APIRouter(prefix="/fhir", include_in_schema=False)
_STARTED = datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ helpers
async def json_body(request: Request) -> object:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in ("application/fhir+json", "application/json", "application/json+fhir"):
        raise Invalid(f"content type '{ctype}' is not supported; send application/fhir+json",
                      [Issue("not-supported", f"unsupported content type {ctype}")])
    limit = request.app.state.platform.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    if not body:
        raise Invalid("the request has no body; send a FHIR resource as JSON",
                      [Issue("required", "a resource is required")])
    try:
        return fhirjson.loads(body)  # keeps each decimal's text (1.00 stays 1.00)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the body is not valid JSON: {exc}",
                      [Issue("structure", f"not valid JSON: {exc}")]) from None
    except fhirjson.TooDeep as exc:
        raise Invalid(str(exc), [Issue("too-costly", str(exc))]) from None


Body = Annotated[object, Depends(json_body)]


def _http_date(us: int) -> str:
    return format_datetime(from_us(us), usegmt=True)


def _resource_response(s: Stored, status: int = 200, *, location: str | None = None,
                       prefer: str | None = None) -> Response:
    headers = {"ETag": s.etag, "Last-Modified": _http_date(s.last_updated)}
    if location:
        headers["Location"] = location
    if prefer and "return=minimal" in prefer:
        return Response(status_code=status, headers=headers)
    return Response(s.content or b"", status_code=status, headers=headers, media_type=FHIR_JSON)


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.strip()
    v = v[2:] if v.startswith("W/") else v
    v = v.strip('"')
    if not v.isdigit():
        raise Invalid(f"If-Match '{value}' is not a version ETag such as W/\"3\"",
                      [Issue("invalid", "If-Match must be a version ETag", ("If-Match",))])
    return int(v)


def _query(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(request.url.query, keep_blank_values=True)


def _bundle(*, btype: str, base: str, self_url: str, next_url: str | None, total: int | None,
            entries: list[bytes]) -> Response:
    head = {"resourceType": "Bundle", "type": btype, "meta": {"lastUpdated": datetime.now(timezone.utc).isoformat()}}
    if total is not None:
        head["total"] = total
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    head["link"] = links
    raw = orjson.dumps(head)
    body = raw[:-1] + b',"entry":[' + b",".join(entries) + b"]}" if entries else raw
    return Response(body, media_type=FHIR_JSON)


def _entry(base: str, s: Stored, mode: str, elements: list[str] | None = None) -> bytes:
    content = s.content.encode() if s.content else b"{}"
    if elements:
        content = fhirjson.dumps(apply_elements(fhirjson.parse(content), elements))
    return (b'{"fullUrl":' + orjson.dumps(f"{base}/{s.res_type}/{s.res_id}") + b',"resource":' + content
            + b',"search":{"mode":"' + mode.encode() + b'"}}')


def _searchset(repo: Repository, res_type: str, page: Page, url_path: str) -> Response:
    base = repo.s.base_url
    qs = urlencode(page.self_params)
    self_url = f"{base}{url_path}" + (f"?{qs}" if qs else "")
    next_url = None
    if page.next_cursor:
        next_url = f"{base}{url_path}?" + urlencode(page.self_params + [("_cursor", page.next_cursor)])
    entries = [_entry(base, m, "match", page.elements) for m in page.matches]
    entries += [_entry(base, m, "include", page.elements) for m in page.includes]
    return _bundle(btype="searchset", base=base, self_url=self_url, next_url=next_url,
                   total=page.total, entries=entries)


def _history_bundle(repo: Repository, versions: list[Stored], nxt: str | None, url_path: str,
                    params: list[tuple[str, str]]) -> Response:
    base = repo.s.base_url
    entries = []
    for v in versions:
        e: dict = {"fullUrl": f"{base}/{v.res_type}/{v.res_id}",
                   "request": {"method": v.method, "url": f"{v.res_type}/{v.res_id}"
                               if v.method != "POST" else v.res_type},
                   "response": {"status": "410 Gone" if v.deleted else ("201 Created" if v.method == "POST" else "200 OK"),
                                "etag": v.etag, "lastModified": v.last_modified}}
        raw = orjson.dumps(e)
        if v.content:
            raw = raw[:-1] + b',"resource":' + v.content.encode() + b"}"
        entries.append(raw)
    params = [(k, x) for k, x in params if k != "_cursor"]
    qs = urlencode(params)
    next_url = f"{base}{url_path}?" + urlencode(params + [("_cursor", nxt)]) if nxt else None
    return _bundle(btype="history", base=base, self_url=f"{base}{url_path}" + (f"?{qs}" if qs else ""),
                   next_url=next_url, total=None, entries=entries)


# ------------------------------------------------------------------ system level
@router.get("/metadata")
def metadata(platform: CurrentPlatform) -> Response:
    cs = capability_statement(platform.services.base_url, _STARTED)
    return Response(orjson.dumps(cs), media_type=FHIR_JSON)


@router.post("")
@router.post("/")
def transaction(repo: Repo, body: Body) -> Response:
    result = bundles.process(repo, body)
    return Response(fhirjson.dumps(result), media_type=FHIR_JSON)


# ------------------------------------------------------------------ AuditEvent (read-only)
@router.get("/AuditEvent")
def audit_search(repo: Repo, request: Request) -> Response:
    params = _query(request)
    items, nxt = repo.audit_search(params)
    base = repo.s.base_url
    entries = [b'{"fullUrl":' + orjson.dumps(f"{base}/AuditEvent/{orjson.loads(c)['id']}")
               + b',"resource":' + c.encode() + b',"search":{"mode":"match"}}' for c in items]
    rest = [(k, v) for k, v in params if k != "_cursor"]
    next_url = f"{base}/AuditEvent?" + urlencode(rest + [("_cursor", nxt)]) if nxt else None
    return _bundle(btype="searchset", base=base, self_url=f"{base}/AuditEvent?{urlencode(rest)}",
                   next_url=next_url, total=None, entries=entries)


@router.get("/AuditEvent/{event_id}")
def audit_read(repo: Repo, event_id: str) -> Response:
    return Response(repo.audit_read(event_id), media_type=FHIR_JSON)


@router.api_route("/AuditEvent", methods=["POST", "PUT", "DELETE", "PATCH"])
@router.api_route("/AuditEvent/{event_id}", methods=["POST", "PUT", "DELETE", "PATCH"])
def audit_write() -> Response:
    raise MethodNotAllowed("AuditEvent is read-only: the platform writes audit records itself",
                           headers={"Allow": "GET"})


# ------------------------------------------------------------------ type level
@router.get("/{res_type}/_history")
def history_type(repo: Repo, res_type: str, request: Request) -> Response:
    params = _query(request)
    q = dict(params)
    versions, nxt = repo.history(res_type, None, count=_int(q.get("_count")), cursor=q.get("_cursor"),
                                 since=q.get("_since"))
    return _history_bundle(repo, versions, nxt, f"/{res_type}/_history", params)


# The read interaction is the commonest request and routes are tried in order, so it
# comes as early as it can: after the two GET routes whose paths it would also match
# (/AuditEvent/{event_id} and /{res_type}/_history).
@router.get("/{res_type}/{res_id}")
async def read(repo: Repo, res_type: str, res_id: str) -> Response:
    return _resource_response(await repo.read_async(res_type, res_id))


@router.get("/{res_type}")
def search_get(repo: Repo, res_type: str, request: Request) -> Response:
    page = repo.search(res_type, _query(request))
    if page.summary_count:
        return _bundle(btype="searchset", base=repo.s.base_url,
                       self_url=f"{repo.s.base_url}/{res_type}?{urlencode(page.self_params)}",
                       next_url=None, total=page.total, entries=[])
    return _searchset(repo, res_type, page, f"/{res_type}")


async def form_params(request: Request) -> list[tuple[str, str]]:
    form = await request.form()
    return [(k, str(v)) for k, v in form.multi_items()] + _query(request)


@router.post("/{res_type}/_search")
def search_post(repo: Repo, res_type: str,
                params: Annotated[list[tuple[str, str]], Depends(form_params)]) -> Response:
    page = repo.search(res_type, params)
    return _searchset(repo, res_type, page, f"/{res_type}")


@router.post("/{res_type}")
def create(repo: Repo, res_type: str, body: Body,
           if_none_exist: Annotated[str | None, Header()] = None,
           prefer: Annotated[str | None, Header()] = None) -> Response:
    w = repo.create(body, res_type=res_type, if_none_exist=if_none_exist)  # type: ignore[arg-type]
    s = w.stored
    loc = f"{repo.s.base_url}/{s.res_type}/{s.res_id}/_history/{s.version_id}"
    return _resource_response(s, 201 if w.created else 200, location=loc if w.created else None,
                              prefer=prefer)


@router.put("/{res_type}")
def conditional_update(repo: Repo, res_type: str, body: Body, request: Request,
                       if_match: Annotated[str | None, Header()] = None,
                       prefer: Annotated[str | None, Header()] = None) -> Response:
    if not request.url.query:
        raise MethodNotAllowed("PUT needs an id (Type/id) or search parameters (conditional update)")
    w = repo.conditional_update(res_type, request.url.query, body, if_match=_if_match(if_match))  # type: ignore[arg-type]
    s = w.stored
    loc = f"{repo.s.base_url}/{s.res_type}/{s.res_id}/_history/{s.version_id}"
    return _resource_response(s, 201 if w.created else 200, location=loc, prefer=prefer)


# ------------------------------------------------------------------ instance level
@router.get("/Patient/{res_id}/$everything")
def everything(repo: Repo, res_id: str, request: Request) -> Response:
    params = _query(request)
    q = dict(params)
    items, nxt = repo.everything(res_id, count=_int(q.get("_count")), cursor=q.get("_cursor"))
    base = repo.s.base_url
    rest = [(k, v) for k, v in params if k != "_cursor"]
    path = f"/Patient/{res_id}/$everything"
    next_url = f"{base}{path}?" + urlencode(rest + [("_cursor", nxt)]) if nxt else None
    return _bundle(btype="searchset", base=base, self_url=f"{base}{path}" + (f"?{urlencode(rest)}" if rest else ""),
                   next_url=next_url, total=None, entries=[_entry(base, s, "match") for s in items])


@router.get("/Patient/{res_id}/$outside-summary")
def outside_summary(repo: Repo, res_id: str) -> Response:
    """Which records of this patient exist at other institutions, without a grant: a Parameters
    resource with one ``hint`` per (data class, item, day, institution) — no values, no ids, no
    counts (docs/consent.md "What a doctor learns without a grant")."""
    params = []
    for h in repo.outside_summary(res_id):
        parts = [{"name": "class", "valueCode": h["class"]},
                 {"name": "institution", "valueReference": {"reference": f"Organization/{h['institution']}"}}]
        if h["code"]:
            parts.append({"name": "item", "valueCoding": {k: v for k, v in
                                                          (("system", h["system"]), ("code", h["code"]),
                                                           ("display", h["display"])) if v}})
        if h["date"]:
            parts.append({"name": "date", "valueDate": h["date"]})
        params.append({"name": "hint", "part": parts})
    return Response(orjson.dumps({"resourceType": "Parameters", "parameter": params}), media_type=FHIR_JSON)


MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


@router.post("/Patient/$match")
def match(repo: Repo, body: Body) -> Response:
    """R4 ``Patient/$match``: a Parameters resource with ``resource`` (a Patient) and the
    optional ``onlyCertainMatches`` and ``count``; a searchset of scored Patients."""
    resource, only_certain, count = body, False, None
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = None
        for i, prm in enumerate(body.get("parameter") or []):
            name = prm.get("name") if isinstance(prm, dict) else None
            if name == "resource":
                resource = prm.get("resource")
            elif name == "onlyCertainMatches":
                if not isinstance(prm.get("valueBoolean"), bool):
                    raise Invalid("onlyCertainMatches takes valueBoolean",
                                  [Issue("invalid", "valueBoolean expected", (f"Parameters.parameter[{i}]",))])
                only_certain = prm["valueBoolean"]
            elif name == "count":
                if not isinstance(prm.get("valueInteger"), int) or prm["valueInteger"] < 1:
                    raise Invalid("count takes a positive valueInteger",
                                  [Issue("invalid", "positive valueInteger expected", (f"Parameters.parameter[{i}]",))])
                count = prm["valueInteger"]
    found = repo.match(resource, only_certain=only_certain, count=count)
    base = repo.s.base_url
    entries = [orjson.dumps({"fullUrl": f"{base}/Patient/{s.res_id}", "resource": orjson.Fragment(s.content),
                             "search": {"mode": "match", "score": round(p, 6),
                                        "extension": [{"url": MATCH_GRADE, "valueCode": grade}]}})
               for s, p, grade in found]
    return _bundle(btype="searchset", base=base, self_url=f"{base}/Patient/$match", next_url=None,
                   total=len(entries), entries=entries)


@router.put("/{res_type}/{res_id}")
def update(repo: Repo, res_type: str, res_id: str, body: Body,
           if_match: Annotated[str | None, Header()] = None,
           prefer: Annotated[str | None, Header()] = None) -> Response:
    w = repo.update(res_type, res_id, body, if_match=_if_match(if_match))  # type: ignore[arg-type]
    s = w.stored
    loc = f"{repo.s.base_url}/{s.res_type}/{s.res_id}/_history/{s.version_id}"
    return _resource_response(s, 201 if w.created else 200, location=loc, prefer=prefer)


@router.delete("/{res_type}/{res_id}")
def delete(repo: Repo, res_type: str, res_id: str,
           if_match: Annotated[str | None, Header()] = None) -> Response:
    s = repo.delete(res_type, res_id, if_match=_if_match(if_match))
    return Response(status_code=204, headers={"ETag": s.etag} if s else {})


@router.get("/{res_type}/{res_id}/_history")
def history_instance(repo: Repo, res_type: str, res_id: str, request: Request) -> Response:
    params = _query(request)
    q = dict(params)
    versions, nxt = repo.history(res_type, res_id, count=_int(q.get("_count")), cursor=q.get("_cursor"),
                                 since=q.get("_since"))
    return _history_bundle(repo, versions, nxt, f"/{res_type}/{res_id}/_history", params)


@router.get("/{res_type}/{res_id}/_history/{version_id}")
def vread(repo: Repo, res_type: str, res_id: str, version_id: str) -> Response:
    return _resource_response(repo.vread(res_type, res_id, version_id))


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    if not v.isdigit():
        raise Invalid(f"'{v}' is not a non-negative integer", [Issue("invalid", "_count must be an integer", ("_count",))])
    return int(v)
