"""The medication-safety knowledge base in the store (issue 8, item 1: "loaded into the store,
replaceable or extendable by a region").  Mirrors ``recognition/store.py``.

Every knowledge base put in force is kept whole in ``medsafety_knowledge`` (migration 0010): the
validated JSON (merged, when extended), its version and SHA-256, the files it was built from,
its counts, when and by whom; the newest active row is in force.  Three ways to build one:

* ``default`` — the bundled ``data/knowledge-v1.json``, stored on first use;
* ``replace`` — a region's own complete file (the same format) instead of the bundled one;
* ``extend`` — the bundled base extended by one or more files of the same format (a licensed
  vendor base, the region's own drug codes): :func:`healthlink.medsafety.knowledge.merge`, an
  entry with an id already in the base replaces it, new ids are added.

Everything is validated before anything is written: a bad file changes nothing, and its errors
name the file and the entry (``vendor.json: interactions[3] (x-1).severity: ...``).  Loading the
same knowledge again changes nothing.

:class:`InForce` is what ``Platform.medsafety`` asks for the knowledge: cached per process and
re-read when another process (``healthlink medsafety load``) puts a new version in force — the
store is asked at most every ``ttl`` seconds, at once after a load in this process.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.errors import Issue
from healthlink.medsafety.knowledge import (
    DEFAULT_PATH,
    SECTIONS,
    Knowledge,
    KnowledgeError,
    merge,
    parse,
)

K = t.medsafety_knowledge
_META = (K.c.id, K.c.version, K.c.sha256, K.c.mode, K.c.files, K.c.counts, K.c.loaded, K.c.loaded_by, K.c.active)
MODES = ("default", "replace", "extend")
_LABEL = re.compile(r"^(\w+)\[(\d+)\](?: \(([^)]*)\))?(.*)$", re.DOTALL)
_generation = 0  # bumped by every load in this process: caches re-read at once
_lock = threading.Lock()


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _read(path: Path) -> tuple[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        return text, json.loads(text)
    except (OSError, ValueError) as exc:
        raise KnowledgeError(f"knowledge {path}: cannot read: {exc}",
                             [Issue("invalid", f"{path.name}: cannot read: {exc}", (path.name,))]) from exc


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _blame(exc: KnowledgeError, ext: dict, name: str) -> KnowledgeError:
    """The merged whole's errors, each named in the file it comes from: an entry the extension
    brought as ``<file>: section[k] (id)...`` (k: its place in that file), the rest as the base's."""
    where: dict[tuple[str, str], int] = {}
    for section in SECTIONS:
        for k, e in enumerate(ext.get(section) or [] if isinstance(ext.get(section), list) else []):
            if isinstance(e, dict) and isinstance(e.get("id"), str):
                where[(section, e["id"])] = k
    issues = []
    for i in exc.issues or []:
        path = i.expression[0] if i.expression else ""
        m = _LABEL.match(path)
        msg = i.diagnostics[len(path) + 2:] if i.diagnostics.startswith(path + ": ") else i.diagnostics
        if m and (m.group(1), m.group(3) or "") in where:
            path = f"{name}: {m.group(1)}[{where[(m.group(1), m.group(3))]}] ({m.group(3)}){m.group(4)}"
        elif path.startswith("provenance"):
            path = f"{name}: {path}"
        else:
            path = f"base: {path}"
        issues.append(Issue(i.code, f"{path}: {msg}", (path,)))
    summary = "; ".join(x.diagnostics for x in issues[:10])
    more = f" (and {len(issues) - 10} more)" if len(issues) > 10 else ""
    return KnowledgeError(f"knowledge extension {name} is invalid: {summary}{more}", issues)


def build(paths: Sequence[str | Path] = (), *, extend: bool = False) -> tuple[Knowledge, str, list[dict]]:
    """Validate and build a knowledge base without storing it: (knowledge, mode, files).  No
    paths: the bundled default.  ``extend``: the bundled base extended by every path in turn;
    otherwise the first path replaces the bundled base (and any further paths extend it)."""
    ps = [Path(p) for p in paths]
    if not ps and extend:
        raise KnowledgeError("--extend needs at least one extension file",
                             [Issue("required", "no extension file", ("files",))])
    if extend or not ps:
        text, raw = _read(DEFAULT_PATH)
        base_name, mode = f"{DEFAULT_PATH.name} (bundled)", "extend" if ps else "default"
        rest = ps
    else:
        text, raw = _read(ps[0])
        base_name, mode = ps[0].name, "replace"
        rest = ps[1:]
    try:
        kb = parse(raw, origin=base_name)
    except KnowledgeError as exc:
        issues = [Issue(i.code, f"{base_name}: {i.diagnostics}", (f"{base_name}: {i.expression[0]}",)
                        if i.expression else (base_name,)) for i in exc.issues or []]
        raise KnowledgeError(exc.message, issues) from None
    files = [{"name": base_name, "sha256": _digest(text), "version": kb.version, "role": "base"}]
    for p in rest:
        text, ext = _read(p)
        if not isinstance(ext, dict):
            raise KnowledgeError(f"knowledge extension {p.name}: top level must be an object",
                                 [Issue("invalid", f"{p.name}: top level must be an object", (p.name,))])
        try:
            kb = merge(kb, ext)
        except KnowledgeError as exc:
            if exc.issues and not exc.message.startswith("knowledge extension:"):
                raise _blame(exc, ext, p.name) from None
            issues = [Issue(i.code, f"{p.name}: {i.diagnostics}", (f"{p.name}: {i.expression[0]}",)
                            if i.expression else (p.name,)) for i in exc.issues or []]
            raise KnowledgeError(f"{p.name}: {exc.message}", issues or [Issue("invalid", exc.message, (p.name,))]
                                 ) from None
        files.append({"name": p.name, "sha256": _digest(text), "version": str(ext.get("version", "?")),
                      "role": "extension"})
    return kb, mode, files


def _row(row: Any) -> dict:
    return {"id": row.id, "version": row.version, "sha256": row.sha256, "mode": row.mode,
            "files": json.loads(row.files), "counts": json.loads(row.counts), "loaded": row.loaded,
            "loaded_by": row.loaded_by, "active": bool(row.active)}


def load(db: Database, paths: Sequence[str | Path] = (), *, extend: bool = False,
         by: str = "system") -> tuple[Knowledge, bool]:
    """Validate the files (see :func:`build`) and put the result in force; returns the knowledge
    and whether it was new (False: the same knowledge is already in force).  A bad file raises
    :class:`KnowledgeError` before anything is written."""
    global _generation
    kb, mode, files = build(paths, extend=extend)
    content = json.dumps(kb.raw, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = _digest(content)
    with db.write() as conn:
        cur = conn.execute(select(K.c.sha256).where(K.c.active.is_(True)).order_by(K.c.id.desc()).limit(1)).scalar()
        if cur == digest:
            return kb, False
        conn.execute(update(K).where(K.c.active.is_(True)).values(active=False))
        conn.execute(K.insert().values(version=kb.version[:160], sha256=digest, content=content, mode=mode,
                                       files=json.dumps(files, ensure_ascii=False),
                                       counts=json.dumps(kb.counts()), loaded=_now_us(), loaded_by=by[:160],
                                       active=True))
    with _lock:
        _generation += 1
    return kb, True


def active_id(db: Database) -> int | None:
    with db.read() as conn:
        return conn.execute(select(K.c.id).where(K.c.active.is_(True)).order_by(K.c.id.desc()).limit(1)).scalar()


def active_row(db: Database) -> dict | None:
    """The store row of the knowledge in force, without its content."""
    with db.read() as conn:
        row = conn.execute(select(*_META).where(K.c.active.is_(True)).order_by(K.c.id.desc()).limit(1)).first()
    return _row(row) if row is not None else None


def active(db: Database) -> tuple[Knowledge, dict] | None:
    """The knowledge in force and its row (version, sha256, mode, files, counts, loaded, loaded_by), or None."""
    with db.read() as conn:
        row = conn.execute(select(K).where(K.c.active.is_(True)).order_by(K.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return parse(json.loads(row.content), origin=f"medsafety_knowledge #{row.id}"), _row(row)


def in_force(db: Database, configured: str | Path | None = None, *, extend: bool = False) -> Knowledge:
    """At start: the configured file (stored when it differs from what is in force), else the
    knowledge in force, else the bundled default (stored)."""
    if configured is not None:
        return load(db, [configured], extend=extend, by="settings")[0]
    got = active(db)
    if got is not None:
        return got[0]
    return load(db, (), by="default")[0]


def history(db: Database) -> list[dict]:
    """Every knowledge base loaded, newest first (without the content)."""
    with db.read() as conn:
        rows = conn.execute(select(*_META).order_by(K.c.id.desc())).all()
    return [_row(r) for r in rows]


def describe(kb: Knowledge, row: dict | None = None) -> dict[str, Any]:
    """What ``GET /api/medsafety/knowledge`` and ``healthlink medsafety knowledge`` show: version,
    date, provenance (publisher, licence, sources, extensions), counts per section, and the store
    row (mode, files, sha256, loaded, by)."""
    prov = kb.provenance or {}
    sources = [{k: s.get(k) for k in ("id", "citation", "url", "licence") if s.get(k) is not None}
               for s in prov.get("sources") or [] if isinstance(s, dict)]
    out: dict[str, Any] = {
        "version": kb.version, "date": kb.date,
        "provenance": {"publisher": prov.get("publisher"), "licence": prov.get("licence"),
                       "extensions": prov.get("extensions", [])},
        "counts": kb.counts(), "sources": sources}
    if row is not None:
        out["stored"] = {k: row[k] for k in ("id", "sha256", "mode", "files", "loaded", "loaded_by")}
    return out


class InForce:
    """The knowledge in force, cached in this process (``Platform.medsafety``'s source).  The
    first call puts the configured file or the bundled default in force if needed; later calls
    return the cached knowledge and look at the store's active row at most every ``ttl`` seconds
    (at once after a load in this process), re-reading it when another version is in force."""

    def __init__(self, db: Database, configured: str | Path | None = None, *, extend: bool = False,
                 ttl: float = 5.0) -> None:
        self.db, self.configured, self.extend, self.ttl = db, configured, extend, ttl
        self._kb: Knowledge | None = None
        self._id: int | None = None
        self._row: dict | None = None
        self._checked = 0.0
        self._gen = -1
        self._mutex = threading.Lock()

    def __call__(self) -> Knowledge:
        now = time.monotonic()
        if self._kb is not None and self._gen == _generation and now - self._checked < self.ttl:
            return self._kb
        with self._mutex:
            if self._kb is None:
                self._gen = _generation
                self._kb = in_force(self.db, self.configured, extend=self.extend)
                self._row = active_row(self.db)
                self._id = self._row["id"] if self._row else None
            else:
                self._gen = _generation
                got = active_id(self.db)
                if got is not None and got != self._id:
                    found = active(self.db)
                    if found is not None:
                        self._kb, self._row = found
                        self._id = self._row["id"]
            self._checked = time.monotonic()
            return self._kb

    def row(self) -> dict | None:
        """The store row of the knowledge returned by the last call."""
        return self._row


__all__ = ["MODES", "InForce", "active", "active_id", "active_row", "build", "describe", "history", "in_force", "load"]
