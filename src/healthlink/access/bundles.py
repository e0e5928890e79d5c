"""Batch and transaction Bundles (FHIR R4 http.html#transaction).

A transaction is atomic: every entry is validated first, ``urn:uuid:`` full URLs are
given ids and every reference to them is rewritten, the entries run in the order the
specification gives (DELETE, POST, PUT, GET) inside one database transaction, and one
failing entry rolls back all of them.  A batch runs each entry on its own.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import Connection

from healthlink.access.repository import Repository, Written
from healthlink.errors import (
    HealthLinkError, Invalid, Issue, NotFound, PayloadTooLarge, PreconditionFailed,
)
from healthlink.fhir import search as S
from healthlink.fhir import store
from healthlink.fhir.definitions import resource_types
from healthlink.fhir.store import Stored, new_id
from healthlink.fhir.validation import check_resource
from healthlink.ledger import AuditRecord

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def _entry_expr(expr: str, index: int) -> str:
    if expr.startswith("Bundle."):
        return expr
    if "?" in expr:  # a search parameter ('Condition?_list'): it came from request.url
        return f"Bundle.entry[{index}].request.url"
    head, dot, rest = expr.partition(".")
    if dot and head[:1].isupper():
        return f"Bundle.entry[{index}].resource.{rest}"
    return f"Bundle.entry[{index}]"


def _prefix_issues(exc: HealthLinkError, index: int) -> HealthLinkError:
    """Point an entry's error at ``Bundle.entry[i]``."""
    exc.issues = [Issue(i.code, f"entry {index}: {i.diagnostics}",
                        tuple(_entry_expr(e, index) for e in i.expression) or (f"Bundle.entry[{index}]",),
                        i.severity) for i in exc.issues]
    exc.message = f"Bundle.entry[{index}]: {exc.message}"
    return exc


def _check_bundle(bundle: object, max_entries: int) -> tuple[str, list[dict]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise Invalid("POST to the base needs a Bundle",
                      [Issue("invalid", "expected a Bundle", ("Bundle.resourceType",))])
    btype = bundle.get("type")
    if btype not in ("transaction", "batch"):
        raise Invalid("Bundle.type must be transaction or batch",
                      [Issue("value", f"Bundle.type is {btype!r}; expected transaction or batch",
                             ("Bundle.type",))])
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise Invalid("Bundle.entry must be an array", [Issue("structure", "not an array", ("Bundle.entry",))])
    if len(entries) > max_entries:
        raise PayloadTooLarge(f"Bundle has {len(entries)} entries; the limit is {max_entries}")
    return btype, entries


def _request(entry: object, i: int) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise Invalid("entry must be an object", [Issue("structure", "not an object", (f"Bundle.entry[{i}]",))])
    req = entry.get("request")
    if not isinstance(req, dict) or not req.get("method") or not req.get("url"):
        raise Invalid(f"Bundle.entry[{i}].request needs method and url",
                      [Issue("required", "request.method and request.url are required",
                             (f"Bundle.entry[{i}].request",))])
    method = str(req["method"]).upper()
    if method not in _ORDER or method == "PATCH":
        raise Invalid(f"method {method} is not supported in a Bundle",
                      [Issue("not-supported", f"method {method} is not supported",
                             (f"Bundle.entry[{i}].request.method",))])
    return method, str(req["url"]).lstrip("/")


def _rewrite(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in mapping:
                out[k] = mapping[v]
            else:
                out[k] = _rewrite(v, mapping)
        return out
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node


class _Plan:
    def __init__(self, i: int, method: str, url: str, entry: dict) -> None:
        self.i, self.method, self.url, self.entry = i, method, url, entry
        path, _, query = url.partition("?")
        self.path_parts = [p for p in urlsplit(path).path.split("/") if p]
        self.query = query
        self.res_type = self.path_parts[0] if self.path_parts else ""
        self.resource = entry.get("resource")
        self.assigned_id: str | None = None


def process(repo: Repository, bundle: object) -> dict:
    btype, entries = _check_bundle(bundle, repo.s.max_bundle_entries)
    if btype == "batch":
        return _batch(repo, entries)
    return _transaction(repo, entries)


def _prepare(entries: list, *, first: int = 0) -> list[_Plan]:
    """Check every entry (``first`` is the index of ``entries[0]`` in the Bundle)."""
    plans, issues = [], []
    for i, entry in enumerate(entries, start=first):
        try:
            method, url = _request(entry, i)
        except HealthLinkError as exc:
            issues.extend(exc.issues)
            continue
        p = _Plan(i, method, url, entry)
        where = (f"Bundle.entry[{i}].request.url",)
        n = len(issues)
        if "://" in url.partition("?")[0]:
            # Bundle.entry.request.url is relative to the base the Bundle is posted to
            issues.append(Issue("not-supported", f"request.url '{url}' must be relative to this "
                                "server's base, such as 'Patient/123'", where))
        elif p.res_type not in resource_types():
            issues.append(Issue("not-supported", f"unknown resource type in '{url}'", where))
        elif method == "POST" and len(p.path_parts) != 1:
            issues.append(Issue("not-supported", f"POST '{url}': an entry may create a resource "
                                "(request.url is its type); operations are not supported", where))
        if method in ("POST", "PUT"):
            # the resource is checked against the url's type only when the url made sense
            issues.extend(check_resource(p.resource, path=f"Bundle.entry[{i}].resource",
                                         expected_type=p.res_type if len(issues) == n else None))
        plans.append(p)
    if issues:
        raise Invalid(f"{len(issues)} problem(s) in the Bundle: {issues[0].diagnostics}", issues)
    return plans


def _transaction(repo: Repository, entries: list) -> dict:
    try:
        plans = _prepare(entries)
    except HealthLinkError as exc:
        repo._audit_failure("transaction", exc)
        raise
    # assign ids to created resources and map every full URL that stands for them
    mapping: dict[str, str] = {}
    for p in plans:
        full = p.entry.get("fullUrl")
        if p.method == "POST":
            p.assigned_id = new_id()
            if isinstance(full, str) and full:
                mapping[full] = f"{p.res_type}/{p.assigned_id}"
        elif p.method == "PUT" and len(p.path_parts) == 2 and isinstance(full, str) and full.startswith("urn:"):
            mapping[full] = f"{p.res_type}/{p.path_parts[1]}"
    results: dict[int, dict] = {}
    touched: list[Stored] = []
    current = -1
    try:
        with repo.s.db.write() as conn:
            for run in _runs(repo, sorted(plans, key=_processing_order)):
                if len(run) > 1 and _create_together(repo, conn, run, mapping, results, touched):
                    current = run[-1].i
                    continue
                for p in run:
                    current = p.i
                    if p.resource is not None and mapping:
                        p.resource = _rewrite(p.resource, mapping)
                    results[p.i] = _run_entry(repo, conn, p, mapping, touched)
            repo.s.audit.write_in(conn, repo._record("transaction", touched))
        repo.s.db.note_bulk_write(len(touched))
    except HealthLinkError as exc:
        if current >= 0:
            exc = _prefix_issues(exc, current)
        repo._audit_failure("transaction", exc, entities=[f"Bundle.entry[{current}]"] if current >= 0 else [])
        raise exc
    return {"resourceType": "Bundle", "id": new_id(), "type": "transaction-response",
            "entry": [results[p.i] for p in sorted(plans, key=lambda x: x.i)]}


def _processing_order(p: _Plan) -> tuple[int, int, int]:
    """DELETE, POST, PUT, GET (http.html#trules).  Within the POSTs, conditional creates
    (ifNoneExist) go first: an entry that refers to one must get the id of the resource it
    matched, not the id it would have been given."""
    conditional = p.method == "POST" and bool((p.entry.get("request") or {}).get("ifNoneExist"))
    return _ORDER[p.method], 0 if conditional else 1, p.i


def _plain_create(repo: Repository, p: _Plan) -> bool:
    return (p.method == "POST" and not (p.entry.get("request") or {}).get("ifNoneExist")
            and repo._permitted(p.res_type, "c"))


def _runs(repo: Repository, ordered: list[_Plan]) -> list[list[_Plan]]:
    """Split the entries, in processing order, into runs of plain creates (written
    together) and single other entries."""
    runs: list[list[_Plan]] = []
    for p in ordered:
        if runs and _plain_create(repo, p) and _plain_create(repo, runs[-1][-1]):
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _create_together(repo: Repository, conn: Connection, run: list[_Plan], mapping: dict[str, str],
                     results: dict[int, dict], touched: list[Stored]) -> bool:
    """Create a run of POST entries with one statement per table.  False (nothing written)
    if any of them fails: the caller then runs them one by one, which names the entry at
    fault exactly as it always did."""
    resources = [_rewrite(p.resource, mapping) if mapping else p.resource for p in run]
    try:
        stored = repo.create_many_in(conn, [(r, p.assigned_id) for r, p in zip(resources, run)])
    except HealthLinkError:
        return False
    base = repo.s.base_url.rstrip("/")
    for p, s in zip(run, stored):
        results[p.i] = _response(s, "201 Created", base, location=True)
    touched.extend(stored)
    return True


def _run_entry(repo: Repository, conn: Connection, p: _Plan, mapping: dict[str, str],
               touched: list[Stored]) -> dict:
    base = repo.s.base_url.rstrip("/")
    req = p.entry.get("request") or {}
    if_match = _etag_version(req.get("ifMatch"))
    if p.method == "POST":
        if_none = req.get("ifNoneExist")
        if isinstance(if_none, str) and if_none.startswith(f"{p.res_type}?"):
            if_none = if_none[len(p.res_type) + 1:]  # the query alone is asked for; accept 'Type?query'
        if if_none:
            found = repo._conditional_matches(conn, p.res_type, if_none)
            if len(found) > 1:
                raise PreconditionFailed(f"ifNoneExist '{if_none}' matches {len(found)} resources")
            if found:
                # later references to this entry point at the existing resource
                full = p.entry.get("fullUrl")
                if isinstance(full, str) and full in mapping:
                    mapping[full] = f"{p.res_type}/{found[0].res_id}"
                return _response(found[0], "200 OK", base)
        s = repo.create_in(conn, p.resource, res_id=p.assigned_id)
        touched.append(s)
        return _response(s, "201 Created", base, location=True)
    if p.method == "PUT":
        if len(p.path_parts) == 2:
            if p.resource.get("id") != p.path_parts[1]:
                raise Invalid("the resource's id must match the request url",
                              [Issue("invalid", "id does not match request.url", (f"{p.res_type}.id",))])
            w = repo.update_in(conn, p.res_type, p.path_parts[1], p.resource, if_match=if_match)
        elif p.query:
            found = repo._conditional_matches(conn, p.res_type, p.query)
            if len(found) > 1:
                raise PreconditionFailed(f"conditional update '{p.query}' matches {len(found)} resources")
            if found:
                w = repo.update_in(conn, p.res_type, found[0].res_id,
                                   dict(p.resource, id=found[0].res_id), if_match=if_match)
            else:
                w = Written(repo.create_in(conn, p.resource), True)
        else:
            raise Invalid(f"PUT needs Type/id or Type?query, not '{p.url}'")
        touched.append(w.stored)
        return _response(w.stored, "201 Created" if w.created else "200 OK", base, location=w.created)
    if p.method == "DELETE":
        if len(p.path_parts) != 2:
            raise Invalid("DELETE in a Bundle needs Type/id")
        s = repo.delete_in(conn, p.res_type, p.path_parts[1], if_match=if_match)
        if s:
            touched.append(s)
        return {"response": {"status": "204 No Content"}}
    # GET / HEAD: read or search
    if len(p.path_parts) == 2 and not p.query:
        repo._require(p.res_type, "read")
        cur = store.read_current(conn, p.res_type, p.path_parts[1])
        if cur is None or not repo._can_see(cur):  # checked before Gone: 410 would reveal the id
            raise NotFound(f"{p.res_type}/{p.path_parts[1]} is not known")
        s = store.read(conn, p.res_type, p.path_parts[1])
        touched.append(s)
        return {"resource": s.json(), "response": {"status": "200 OK", "etag": s.etag}}
    if len(p.path_parts) == 1:
        repo._require(p.res_type, "search-type")
        page = S.search(conn, p.res_type, parse_qsl(p.query, keep_blank_values=True),
                        visible=repo.visibility, base_url=repo.s.base_url,
                        default_count=repo.s.default_page_size, max_count=repo.s.max_page_size)
        touched.extend(page.matches)
        return {"resource": {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"fullUrl": f"{base}/{m.res_type}/{m.res_id}",
                                        "resource": m.json(), "search": {"mode": "match"}}
                                       for m in page.matches]},
                "response": {"status": "200 OK"}}
    raise Invalid(f"GET '{p.url}' is not supported in a Bundle")


def _batch(repo: Repository, entries: list) -> dict:
    out = []
    for i, entry in enumerate(entries):
        try:
            (p,) = _prepare([entry], first=i)
            touched: list[Stored] = []
            with repo.s.db.write() as conn:
                res = _run_entry(repo, conn, p, {}, touched)
                repo.s.audit.write_in(conn, repo._record("batch", touched))
            out.append(res)
        except HealthLinkError as exc:
            exc = _prefix_issues(exc, i)
            repo._audit_failure("batch", exc, entities=[f"Bundle.entry[{i}]"])
            out.append({"response": {"status": f"{exc.status} {_REASONS.get(exc.status, '')}".strip(),
                                     "outcome": {"resourceType": "OperationOutcome",
                                                 "issue": [x.to_fhir() for x in exc.issues]}}})
    return {"resourceType": "Bundle", "id": new_id(), "type": "batch-response", "entry": out}


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 410: "Gone",
            412: "Precondition Failed", 422: "Unprocessable Entity", 503: "Service Unavailable"}


def _response(s: Stored, status: str, base: str, *, location: bool = False) -> dict:
    r: dict = {"status": status, "etag": s.etag, "lastModified": s.last_modified}
    if location:
        r["location"] = f"{s.res_type}/{s.res_id}/_history/{s.version_id}"
    return {"fullUrl": f"{base}/{s.res_type}/{s.res_id}", "response": r}


def _etag_version(v: object) -> int | None:
    if not v:
        return None
    s = str(v).strip()
    if s.startswith("W/"):
        s = s[2:]
    s = s.strip('"')
    if not s.isdigit():
        raise Invalid(f"If-Match '{v}' is not a version ETag such as W/\"3\"")
    return int(s)


__all__ = ["process", "AuditRecord"]
