"""Pass 1 of an upload: read every record, check it, and decide what happens to it.

References are resolved only after the whole upload has been read (NDJSON comes one
resource type per file, so a Patient may arrive after its Observations).  A record whose
reference points at a quarantined record is quarantined too, repeatedly, until nothing
changes.  Only small per-record facts are kept, not the resources: pass 2 reads the
files again to write them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, select

from healthlink.access.roles import data_class
from healthlink.access.repository import NOT_STORED
from healthlink.db import in_many
from healthlink.db import tables as t
from healthlink.ingest.rules import Finding, first_finding
from healthlink.ingest.sources import Record, read_records

_NS = uuid.UUID("6f1c3c1e-5b7a-4c61-9d1e-4f1f7e2a9b10")  # ids of new resources (below)

Loc = tuple[int, int]  # (file number, line)
Key = tuple[str, str]  # (resource type, source id)


@dataclass(slots=True)
class Info:
    res_type: str | None
    source_id: str | None
    keys: list[str]  # idempotency keys: "id:<source id>", "identifier:<system>|<value>"
    refs: list[tuple[str, Key]]  # (reference text, target key)
    finding: Finding | None = None
    raw_hash: str = ""  # only kept when needed (no source id, or a finding)
    target: str | None = None  # the stored resource's id


@dataclass
class Plan:
    files: list[Path]
    institution: str
    infos: dict[Loc, Info] = field(default_factory=dict)
    full_urls: dict[str, Key] = field(default_factory=dict)
    ids: dict[Key, str] = field(default_factory=dict)  # source key -> stored id, for references

    def accepted(self) -> int:
        return sum(1 for i in self.infos.values() if i.finding is None)


def records(files: list[Path]) -> Iterator[tuple[Loc, Record]]:
    for fno, path in enumerate(files):
        for rec in read_records(path):
            yield (fno, rec.line), rec


def new_resource_id(institution: str, res_type: str, key: str) -> str:
    """Deterministic, so a rerun after a crash gives a record the id it got before."""
    return str(uuid.uuid5(_NS, f"{institution}|{res_type}|{key}"))


def _references(node: object, out: list[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference":
                if isinstance(v, str):
                    out.append(v)
            elif k != "contained" and isinstance(v, (dict, list)):
                _references(v, out)
    elif isinstance(node, list):
        for v in node:
            if isinstance(v, (dict, list)):
                _references(v, out)


def _source_id(rec: Record) -> str | None:
    res = rec.resource or {}
    if isinstance(res.get("id"), str):
        return res["id"]
    if rec.full_url and rec.full_url.startswith("urn:uuid:"):
        return rec.full_url[9:]
    return None


def raw_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def inspect(rec: Record, shared: dict | None = None) -> Info:
    """The facts of one record that pass 2 and reference resolution need.  ``shared`` (the
    plan's) holds one copy of each reference: an upload names the same Patient, Practitioner
    and Organization in record after record, and these facts stay in memory for the whole
    upload (docs/ingest.md, memory)."""
    if rec.resource is None:
        return Info(None, None, [], [], Finding("parse", None, rec.error or "not a resource"), raw_hash(rec.raw))
    res = rec.resource
    rt = res.get("resourceType") if isinstance(res.get("resourceType"), str) else None
    sid = _source_id(rec)
    finding = first_finding(res)
    if finding is None and rt in NOT_STORED:
        finding = Finding("structure", rt, NOT_STORED[rt])
    digest = raw_hash(rec.raw) if finding is not None or not sid else ""
    keys = [f"id:{sid}"] if sid else [f"hash:{digest}"]
    for ident in res.get("identifier") or [] if isinstance(res.get("identifier"), list) else []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            keys.append(f"identifier:{ident['system']}|{ident['value']}"[:512])
    texts: list[str] = []
    _references({k: v for k, v in res.items() if k != "contained"}, texts)
    refs: list[tuple[str, Key]] = []
    for text in texts:
        ref = shared.get(text) if shared is not None else None
        if ref is None:
            parts = text.split("/")
            if len(parts) == 2 and parts[0][:1].isupper() and "?" not in text:
                ref = (text, (parts[0], parts[1]))
            elif text.startswith("urn:uuid:"):
                ref = (text, ("", text))  # resolved through fullUrl below
            else:
                continue
            if shared is not None:
                shared[text] = ref
        refs.append(ref)
    return Info(rt, sid, keys, refs, finding, digest)


def read_plan(files: list[Path], institution: str, *, progress: Callable[[int], None] | None = None) -> Plan:
    plan = Plan(files, institution)
    shared: dict[str, tuple[str, Key]] = {}
    urns = False
    for n, (loc, rec) in enumerate(records(files), 1):
        info = inspect(rec, shared)
        plan.infos[loc] = info
        if rec.full_url and info.res_type and info.source_id:
            plan.full_urls[rec.full_url] = (info.res_type, info.source_id)
        urns = urns or any(key[0] == "" for _, key in info.refs)
        if progress and n % 1000 == 0:
            progress(n)
    if urns:  # Bundles: urn:uuid references point at an entry's fullUrl
        resolved = {text: (text, plan.full_urls.get(text, key)) for text, (_, key) in shared.items() if key[0] == ""}
        for info in plan.infos.values():
            if any(key[0] == "" for _, key in info.refs):
                info.refs = [resolved.get(text, (text, key)) for text, key in info.refs]
    return plan


def _chunks(items: list, n: int = 500) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _by_type(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rt, v in pairs:
        out.setdefault(rt, []).append(v)
    return out


def resolve(plan: Plan, conn: Connection) -> None:
    """Assign stored ids, then quarantine records whose references cannot be resolved."""
    inst = plan.institution
    known: dict[tuple[str, str], str] = {}  # (type, key) -> stored id, from earlier uploads
    wanted = sorted({(i.res_type, k) for i in plan.infos.values() if i.res_type for k in i.keys}
                    | {(key[0], f"id:{key[1]}") for i in plan.infos.values() for _, key in i.refs if key[0]})
    sk = t.ingest_source_key.c
    for rt, keys in _by_type(wanted).items():
        for chunk in _chunks(keys, 2000):
            rows = conn.execute(select(sk.key, sk.res_id).where(
                sk.institution_id == inst, sk.res_type == rt, in_many(conn, sk.key, chunk))).all()
            known.update({(rt, r.key): r.res_id for r in rows})
    in_upload: dict[Key, Info] = {}
    quarantined: dict[Key, Info] = {}
    for info in plan.infos.values():
        if not info.res_type or not info.source_id:
            continue
        (quarantined if info.finding else in_upload).setdefault((info.res_type, info.source_id), info)
    for info in plan.infos.values():
        if info.res_type and info.finding is None:
            info.target = next((known[(info.res_type, k)] for k in info.keys if (info.res_type, k) in known),
                               None) or new_resource_id(inst, info.res_type, info.keys[0])
            if info.source_id:
                plan.ids.setdefault((info.res_type, info.source_id), info.target)
    # targets outside the upload: an earlier upload's source id, or a stored resource's id
    outside = sorted({key for i in plan.infos.values() if i.finding is None for _, key in i.refs
                      if key[0] and key not in in_upload and key not in quarantined})
    stored: set[Key] = set()
    r = t.resource.c
    for key in outside:
        if (key[0], f"id:{key[1]}") in known:
            plan.ids[key] = known[(key[0], f"id:{key[1]}")]
    for rt, ids in _by_type(outside).items():
        rows = [row for chunk in _chunks(ids, 2000) for row in conn.execute(
            select(r.res_type, r.res_id, r.institution_id).where(
                r.res_type == rt, in_many(conn, r.res_id, chunk), r.deleted.is_(False)))]
        for row in rows:
            if row.institution_id == inst or data_class(row.res_type) == "directory":
                stored.add((row.res_type, row.res_id))
                plan.ids.setdefault((row.res_type, row.res_id), row.res_id)
    changed = True
    while changed:  # a record depending on a quarantined record is quarantined too
        changed = False
        for info in plan.infos.values():
            if info.finding is not None:
                continue
            for text, key in info.refs:
                if key[0] == "":
                    info.finding = Finding("unresolved-reference", None, f"{text} is not in the upload")
                elif key in quarantined:
                    q = quarantined[key]
                    info.finding = Finding("depends-on-quarantined", None,
                                           f"{text} was quarantined ({q.finding.reason})")  # type: ignore[union-attr]
                elif key in in_upload or key in stored or key in plan.ids:
                    continue
                else:
                    info.finding = Finding("unresolved-reference", None,
                                           f"{text} is neither in the upload nor stored for this institution")
                if info.finding is not None:
                    if info.res_type and info.source_id:
                        quarantined.setdefault((info.res_type, info.source_id), info)
                        in_upload.pop((info.res_type, info.source_id), None)
                    changed = True
                    break
