"""Generated uploads for the ingest tests: valid records plus invalid ones of known kinds."""

from __future__ import annotations

from pathlib import Path

import orjson

from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM, resident_id_check_digit

# kind -> how many invalid records of that kind the 10,000-record upload holds (37 in all)
INVALID = {"structure": 8, "resident-id": 7, "future-date": 6, "unit": 6,
           "unresolved-reference": 5, "parse": 3, "depends-on-quarantined": 2}


def resident_id(n: int, *, valid: bool = True) -> str:
    first17 = f"632701{1950 + n % 50}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    check = resident_id_check_digit(first17)
    if not valid:
        check = "0" if check != "0" else "1"
    return first17 + check


def patient(n: int, *, valid_id: bool = True) -> dict:
    return {"resourceType": "Patient", "id": f"p{n}",
            "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": resident_id(n, valid=valid_id)},
                           {"system": "urn:example:mrn", "value": f"MRN{n:06d}"}],
            "name": [{"text": f"才仁{n}", "family": "才仁"}], "gender": "female" if n % 2 else "male",
            "birthDate": f"{1950 + n % 50}-{1 + n % 12:02d}-{1 + n % 28:02d}"}


def observation(n: int, patient_id: str) -> dict:
    return {"resourceType": "Observation", "id": f"o{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T08:00:00+08:00",
            "valueQuantity": {"value": 110 + n % 60, "unit": "g/L", "system": "http://unitsofmeasure.org",
                              "code": "g/L"}}


def upload_lines(n_patients: int = 2000, n_observations: int = 8000) -> list[bytes]:
    """Observations first (their Patients come later in the file), then Patients; the
    37 invalid records of ``INVALID`` are spread through it."""
    plain = n_patients - 12  # patients p{plain}.. get no observations of their own
    bad_ids = list(range(plain, plain + INVALID["resident-id"]))
    obs = [observation(i, f"p{i % plain}") for i in range(n_observations)]
    lines: list[bytes] = [orjson.dumps(o) for o in obs]
    k = iter(range(7, n_observations, 211))  # which observations are spoiled
    for _ in range(INVALID["future-date"]):
        i = next(k)
        lines[i] = orjson.dumps(dict(obs[i], effectiveDateTime="2099-01-01"))
    for _ in range(INVALID["unit"]):
        i = next(k)
        lines[i] = orjson.dumps(dict(obs[i], valueQuantity={"value": 13, "unit": "kg",
                                                            "system": "http://unitsofmeasure.org", "code": "kg"}))
    for _ in range(INVALID["unresolved-reference"]):
        i = next(k)
        lines[i] = orjson.dumps(dict(obs[i], subject={"reference": "Patient/nobody"}))
    for _ in range(INVALID["depends-on-quarantined"]):
        i = next(k)
        lines[i] = orjson.dumps(dict(obs[i], subject={"reference": f"Patient/p{bad_ids[0]}"}))
    for _ in range(INVALID["structure"] // 2):
        i = next(k)
        lines[i] = orjson.dumps({kk: v for kk, v in obs[i].items() if kk != "status"})  # status required
    for _ in range(INVALID["parse"]):
        i = next(k)
        lines[i] = lines[i][:-5]  # truncated line
    pats = [patient(n, valid_id=n not in bad_ids) for n in range(n_patients)]
    for s in range(INVALID["structure"] - INVALID["structure"] // 2):
        n = plain + INVALID["resident-id"] + s
        pats[n] = dict(pats[n], gender="unknown-gender")
    lines += [orjson.dumps(p) for p in pats]
    return lines


def write_upload(path: Path, **kw: int) -> Path:
    path.write_bytes(b"\n".join(upload_lines(**kw)) + b"\n")
    return path
