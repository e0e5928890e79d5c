"""Load a generated region into the database through the repository.

The shared directory (Organizations) is written by the platform's system actor with no
institution; everything else by a system actor *of the institution that holds it*, so
the rows carry that ``institution_id`` and the per-institution visibility rules hold
(the demo doctor of ``yushu-peoples`` sees that hospital's patients and no others).
Writes go in batches, one transaction each, grouped by institution.

:func:`ensure_region` is what ``healthlink serve --demo`` and ``healthlink demo`` run: it
loads a region once per database, keeping a marker (``Basic/demogen-region``: seed,
Patient records, loading or complete) so that a second run changes nothing and a load cut
short (process killed) is finished by the next run, which skips what is already stored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select

from healthlink import demo
from healthlink.access import Actor, Repository, RequestContext
from healthlink.access.scopes import parse_scopes
from healthlink.db import tables as t
from healthlink.demogen.region import region_resources
from healthlink.demogen.stream import Options, generate, patient_records
from healthlink.errors import Conflict
from healthlink.fhir import store
from healthlink.runtime import Platform

BATCH = 500
MARKER_ID = "demogen-region"
MARKER_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/demogen"
MARKER_EXT = "https://healthlink.example.org/fhir/StructureDefinition/demogen-"


def _repo(platform: Platform, inst: str) -> Repository:
    actor = Actor("system", "system:demogen", f"HealthLink demo generator ({inst})", inst,
                  frozenset({"system"}), parse_scopes("system/*.cruds"))
    return platform.repository(RequestContext(actor=actor, address="local", purpose_of_use="HOPERAT"))


def _stored_keys(conn, resources: list[dict]) -> set[tuple[str, str]]:  # noqa: ANN001
    """The ``(type, id)`` of ``resources`` that are already stored (deleted ones too)."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for res in resources:
        by_type[res["resourceType"]].append(res["id"])
    have: set[tuple[str, str]] = set()
    for rt, ids in by_type.items():
        rows = conn.execute(select(t.resource.c.res_id).where(t.resource.c.res_type == rt,
                                                              t.resource.c.res_id.in_(ids)))
        have.update((rt, rid) for rid in rows.scalars())
    return have


def _upsert(platform: Platform, items: list[tuple[Repository, dict]]) -> int:
    """Create the missing resources, update those that differ, leave equal ones alone (no
    new version on a second run); one transaction.  Returns the number written."""
    written = 0
    with platform.db.write() as conn:
        have = _stored_keys(conn, [res for _, res in items])
        new: dict[int, tuple[Repository, list[tuple[dict, str | None]]]] = {}
        for repo, res in items:
            key = (res["resourceType"], res["id"])
            if key not in have:
                new.setdefault(id(repo), (repo, []))[1].append((res, res["id"]))
                continue
            cur = store.read_current(conn, *key)
            body = cur.json() if cur is not None else {}
            body.pop("meta", None)
            if cur is None or cur.deleted or body != res:
                repo.update_in(conn, key[0], key[1], res, if_match=None)
                written += 1
        for repo, batch in new.values():
            repo.create_many_in(conn, batch)
            written += len(batch)
    return written


def write_directory(platform: Platform) -> int:
    """Upsert the region's directory (institutions and departments, the same for every
    seed and size); returns the number of Organizations written (0 when unchanged)."""
    system = platform.system_repository("demogen")
    orgs = []
    for inst, res in region_resources(1):
        if inst is not None:
            break  # the staff follows the directory
        orgs.append((system, res))
    return _upsert(platform, orgs)


def seed_demo(platform: Platform) -> bool:
    """The region's directory, then the demo logins at its institutions
    (:func:`healthlink.demo.seed`) and the institutions' recognition qualifications
    (:func:`healthlink.demogen.recognition.seed_qualifications`, only those missing); returns
    False if the logins were all there."""
    from healthlink.demogen.recognition import seed_qualifications

    write_directory(platform)
    made = demo.seed(platform)
    seed_qualifications(platform)
    return made


def load_region(platform: Platform, opts: Options, *,
                progress: Callable[[int], None] | None = None, resume: bool = False) -> int:
    """Write the region; returns the number of resources written.  Organizations and staff
    are upserted (a second run leaves them as they are); patient data is created, so load a
    region once per database — or with ``resume``, which skips the resources already
    stored (finishing a load cut short, or extending a smaller region of the same seed).
    ``progress`` sees the number of resources done so far (written or skipped)."""
    system = platform.system_repository("demogen")
    repos: dict[str, Repository] = {}
    pending: dict[str, list[tuple[dict, str | None]]] = defaultdict(list)
    upserts: list[tuple[Repository, dict]] = []
    count = done = 0

    def repo_of(inst: str) -> Repository:
        if inst not in repos:
            repos[inst] = _repo(platform, inst)
        return repos[inst]

    def upsert() -> None:  # the directory and staff: one transaction per batch
        nonlocal count, done
        if upserts:
            count += _upsert(platform, upserts)
            done += len(upserts)
            upserts.clear()

    def flush(inst: str) -> None:
        nonlocal count, done
        items = pending.pop(inst, [])
        if items:
            with platform.db.write() as conn:
                if resume:
                    have = _stored_keys(conn, [res for res, _ in items])
                    todo = [it for it in items if (it[0]["resourceType"], it[0]["id"]) not in have]
                else:
                    todo = items
                if todo:
                    repo_of(inst).create_many_in(conn, todo)
            platform.db.note_bulk_write(len(todo))
            count += len(todo)
            done += len(items)
            if progress:
                progress(done)

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


@dataclass(frozen=True)
class RegionState:
    """What the marker says: the region of ``seed`` with ``patients`` Patient records is
    loaded (``complete``) or being loaded."""

    seed: int
    patients: int
    complete: bool


@dataclass(frozen=True)
class Ensured:
    """What :func:`ensure_region` did: ``present`` (nothing), ``loaded`` (a new region),
    ``resumed`` (finished a load cut short) or ``extended`` (a larger region of the seed)."""

    outcome: str
    written: int
    state: RegionState


def _marker(state: RegionState) -> dict:
    return {"resourceType": "Basic", "id": MARKER_ID,
            "code": {"coding": [{"system": MARKER_SYSTEM, "code": "region",
                                 "display": "HealthLink demo region (healthlink demo)"}]},
            "extension": [{"url": MARKER_EXT + "seed", "valueInteger": state.seed},
                          {"url": MARKER_EXT + "patients", "valueInteger": state.patients},
                          {"url": MARKER_EXT + "complete", "valueBoolean": state.complete}]}


def region_state(platform: Platform) -> RegionState | None:
    """The marker of the region loaded into this database, if any."""
    with platform.db.read() as conn:
        cur = store.read_current(conn, "Basic", MARKER_ID)
    if cur is None or cur.deleted:
        return None
    ext = {e["url"].removeprefix(MARKER_EXT): next(v for k, v in e.items() if k.startswith("value"))
           for e in cur.json().get("extension", [])}
    return RegionState(int(ext["seed"]), int(ext["patients"]), bool(ext["complete"]))


def _write_marker(platform: Platform, state: RegionState) -> None:
    with platform.db.write() as conn:
        platform.system_repository("demogen").update_in(conn, "Basic", MARKER_ID, _marker(state), if_match=None)


def ensure_region(platform: Platform, opts: Options, *, progress: Callable[[int], None] | None = None,
                  on_start: Callable[[str], None] | None = None) -> Ensured:
    """Make sure the database holds the region of ``opts`` (``opts.patients`` records of
    ``opts.seed``): nothing to do when the marker says so (a quick check); otherwise load
    it, skipping what an earlier, interrupted load (or a smaller region of the same seed)
    stored.  ``on_start(outcome)`` is called before a load begins.  A database that holds
    another seed's region raises :class:`Conflict` (patient ids repeat between seeds)."""
    state = region_state(platform)
    if state is not None and state.seed != opts.seed:
        raise Conflict(f"this database holds the demo region of seed {state.seed}; patient ids repeat "
                       f"between seeds, so seed {opts.seed} needs a new database")
    if state is not None and state.complete and state.patients >= opts.patients:
        return Ensured("present", 0, state)
    first = next(patient_records(replace(opts, patients=1, clinical=False)), None)
    stored_first = None
    if first is not None:
        with platform.db.read() as conn:
            stored_first = store.read_current(conn, "Patient", first.patient_id)
        if stored_first is not None and (stored_first.json().get("identifier")
                                         != first.resource.get("identifier")):
            raise Conflict(f"Patient/{first.patient_id} in this database is not the one of the demo region "
                           f"of seed {opts.seed} (another region or other data is loaded): use a new database")
    if state is not None and state.complete:
        outcome = "extended"
    elif state is not None or stored_first is not None:
        outcome = "resumed"
    else:
        outcome = "loaded"
    if on_start:
        on_start(outcome)
    _write_marker(platform, RegionState(opts.seed, opts.patients, False))
    written = load_region(platform, opts, progress=progress, resume=outcome != "loaded")
    done = RegionState(opts.seed, opts.patients, True)
    _write_marker(platform, done)
    return Ensured(outcome, written, done)
