"""The catalogue in the store (issue 7, item 1: "loaded into the store and replaceable by a
region").  Each catalogue file loaded is kept whole in ``recognition_catalogue`` with its
version, SHA-256, when and by whom; the newest active row is the catalogue in force.  Loading the
same file again changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select, update

from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.recognition.catalogue import DEFAULT_PATH, Catalogue, CatalogueError, parse
from healthlink.recognition.service import now_us

C = t.recognition_catalogue


def _read(path: Path) -> tuple[str, Catalogue]:
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"catalogue {path}: cannot read: {exc}") from exc
    return text, parse(raw, origin=str(path))


def active(db: Database) -> tuple[Catalogue, dict] | None:
    """The catalogue in force and its row (version, sha256, loaded, loaded_by), or None."""
    with db.read() as conn:
        row = conn.execute(select(C).where(C.c.active.is_(True)).order_by(C.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    cat = parse(json.loads(row.content), origin=f"recognition_catalogue #{row.id}")
    return cat, {"id": row.id, "version": row.version, "sha256": row.sha256, "items": row.items,
                 "loaded": row.loaded, "loaded_by": row.loaded_by}


def load(db: Database, path: str | Path | None = None, *, by: str = "system") -> tuple[Catalogue, bool]:
    """Validate ``path`` (default: the bundled file) and make it the catalogue in force; returns
    the catalogue and whether it was new (False: the same file is already in force)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    text, cat = _read(p)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with db.write() as conn:
        cur = conn.execute(select(C.c.sha256).where(C.c.active.is_(True)).order_by(C.c.id.desc()).limit(1)).scalar()
        if cur == digest:
            return cat, False
        conn.execute(update(C).where(C.c.active.is_(True)).values(active=False))
        conn.execute(C.insert().values(version=cat.version, sha256=digest, content=text, items=len(cat.items),
                                       loaded=now_us(), loaded_by=by, active=True))
    return cat, True


def in_force(db: Database, configured: str | Path | None = None) -> Catalogue:
    """At start: the configured file (stored when it differs from the one in force), else the one in
    force, else the bundled default (stored)."""
    if configured is not None:
        return load(db, configured, by="settings")[0]
    got = active(db)
    if got is not None:
        return got[0]
    return load(db, None, by="default")[0]


def history(db: Database) -> list[dict]:
    with db.read() as conn:
        rows = conn.execute(select(C.c.id, C.c.version, C.c.sha256, C.c["items"], C.c.loaded, C.c.loaded_by,
                                   C.c.active).order_by(C.c.id.desc())).all()
    return [dict(r._mapping) for r in rows]
