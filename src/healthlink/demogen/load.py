"""Load a generated region into the database through the repository.

The shared directory (Organizations) is written by the platform's system actor with no
institution; everything else by a system actor *of the institution that holds it*, so
the rows carry that ``institution_id`` and the per-institution visibility rules hold
(the demo doctor of ``yushu-peoples`` sees that hospital's patients and no others).
Writes go in batches, one transaction each, grouped by institution.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from healthlink.access import Actor, Repository, RequestContext
from healthlink.access.scopes import parse_scopes
from healthlink.demogen.stream import Options, generate
from healthlink.runtime import Platform

BATCH = 500


def _repo(platform: Platform, inst: str) -> Repository:
    actor = Actor("system", "system:demogen", f"HealthLink demo generator ({inst})", inst,
                  frozenset({"system"}), parse_scopes("system/*.cruds"))
    return platform.repository(RequestContext(actor=actor, address="local", purpose_of_use="HOPERAT"))


def load_region(platform: Platform, opts: Options, *,
                progress: Callable[[int], None] | None = None) -> int:
    """Write the region; returns the number of resources written.  Organizations and staff
    are upserted (a second run leaves them as they are); patient data is created, so load a
    region once per database."""
    system = platform.system_repository("demogen")
    repos: dict[str, Repository] = {}
    pending: dict[str, list[tuple[dict, str | None]]] = defaultdict(list)
    upserts: list[tuple[Repository, dict]] = []
    count = 0

    def repo_of(inst: str) -> Repository:
        if inst not in repos:
            repos[inst] = _repo(platform, inst)
        return repos[inst]

    def upsert() -> None:  # the directory and staff: one transaction per batch
        nonlocal count
        if upserts:
            with platform.db.write() as conn:
                for repo, res in upserts:
                    repo.update_in(conn, res["resourceType"], res["id"], res, if_match=None)
            count += len(upserts)
            upserts.clear()

    def flush(inst: str) -> None:
        nonlocal count
        items = pending.pop(inst, [])
        if items:
            with platform.db.write() as conn:
                repo_of(inst).create_many_in(conn, items)
            platform.db.note_bulk_write(len(items))
            count += len(items)
            if progress:
                progress(count)

    for inst, res in generate(opts):
        if inst is None or res["resourceType"] in ("Practitioner", "PractitionerRole"):
            upserts.append((system if inst is None else repo_of(inst), res))
            if len(upserts) >= BATCH:
                upsert()
            continue
        upsert()
        pending[inst].append((res, res["id"]))
        # cut batches at a Patient, so a batch never holds history whose Patient comes later
        if len(pending[inst]) >= BATCH and res["resourceType"] == "Patient":
            flush(inst)
    upsert()
    for inst in list(pending):
        flush(inst)
    return count
