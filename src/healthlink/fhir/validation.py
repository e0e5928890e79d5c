"""Structural validation of incoming resources against FHIR R4 4.0.1.

The official JSON schema does the bulk (types, patterns, cardinality of arrays, unknown
elements) through jsonschema-rs, against ``#/definitions/<resourceType>`` so errors point
at elements instead of the top-level ``oneOf``.  Then the checks the schema cannot
express: required primitive elements (``Observation.status``; a primitive may be present
as ``_status`` with only an extension), required choice elements, and at most one type
of each choice element (``value[x]``).  Contained resources are validated by their own
type.  Errors name FHIR element paths such as ``Observation.valueQuantity.value``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from functools import cache

import jsonschema_rs

from healthlink.errors import Invalid, Issue
from healthlink.fhir.definitions import choice_groups, required_elements, resource_types, schema
from healthlink.fhir.fhirjson import MAX_DEPTH, dumps, plain

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_lock = threading.Lock()


@cache
def _validator(res_type: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft6Validator(
        {"$ref": f"#/definitions/{res_type}", "definitions": schema()["definitions"]}
    )


def validator(res_type: str) -> jsonschema_rs.Validator:
    with _lock:  # compile each type once, even under concurrent first use
        return _validator(res_type)


def element_path(root: str, instance_path: list | tuple) -> str:
    """['component', 0, 'valueQuantity', 'value'] -> 'Observation.component[0].valueQuantity.value'."""
    out = root
    for p in instance_path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def check_resource(resource: object, *, path: str | None = None,
                   expected_type: str | None = None) -> list[Issue]:
    """Return the structural problems of ``resource`` (empty when valid)."""
    if not isinstance(resource, dict):
        return [Issue("structure", "a resource must be a JSON object", (path or "Resource",))]
    rt = resource.get("resourceType")
    if not isinstance(rt, str) or rt not in resource_types():
        where = (f"{path}.resourceType" if path else "resourceType")
        return [Issue("structure", f"unknown or missing resourceType {rt!r}", (where,))]
    root = path or rt
    if path is None and _too_deep(resource):
        return [Issue("too-costly", f"the resource is nested deeper than {MAX_DEPTH} levels", (root,))]
    if expected_type and rt != expected_type:
        return [Issue("invalid", f"resourceType {rt} does not match the URL's {expected_type}",
                      (f"{root}.resourceType",))]
    issues: list[Issue] = []
    seen: set[str] = set()
    try:
        errors = list(validator(rt).iter_errors(resource))
    except ValueError:  # jsonschema-rs takes no float subclass (fhirjson.ExactDecimal)
        errors = list(validator(rt).iter_errors(plain(resource)))
    for err in errors:
        ipath = list(err.instance_path)
        # contained resources are checked by their own type below
        if ipath[:1] == ["contained"] and len(ipath) >= 2:
            continue
        if type(err.kind).__name__ == "AdditionalProperties":
            m = re.search(r"\((.+) (?:was|were) unexpected\)", err.message)
            names = re.findall(r"'([^']+)'", m.group(1)) if m else []
            for name in names or ["?"]:
                ep = element_path(root, ipath + [name])
                if ep not in seen:
                    seen.add(ep)
                    issues.append(Issue("structure", f"unknown element '{name}'", (ep,)))
            continue
        ep = element_path(root, ipath)
        if ep in seen:
            continue  # one message per element is enough
        seen.add(ep)
        issues.append(Issue("structure" if ipath else "invalid", _short(err.message), (ep,)))
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not _ID.match(rid)):
        ep = f"{root}.id"
        if ep not in seen:
            issues.append(Issue("value", "id must be 1-64 characters of A-Z a-z 0-9 - .", (ep,)))
    issues.extend(_required_and_choices(resource, rt, root))
    for i, c in enumerate(resource.get("contained") or []):
        if isinstance(c, dict):
            issues.extend(check_resource(c, path=f"{root}.contained[{i}]"))
    return issues


#: an answer names at most this many problems, each in at most MAX_MESSAGE characters: a
#: schema message quotes the offending value, which may be megabytes (issue 9, the /fhir fuzz)
MAX_ISSUES, MAX_MESSAGE = 100, 300


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"


def _too_deep(resource: dict) -> bool:
    """Deeper than the store can write (orjson's limit, fhirjson.MAX_DEPTH): found by the
    parser fuzz (issue 9), an NDJSON line 300 levels deep crashed the import instead of being
    quarantined.  One C-speed serialisation answers it."""
    try:
        dumps(resource)
    except TypeError:
        return True
    return False


def validate_resource(resource: object, *, expected_type: str | None = None) -> dict:
    """Raise :class:`Invalid` listing every problem (the first :data:`MAX_ISSUES`); return the
    resource when valid."""
    issues = check_resource(resource, expected_type=expected_type)
    if len(issues) > MAX_ISSUES:
        more = len(issues) - MAX_ISSUES
        issues = issues[:MAX_ISSUES] + [Issue("too-costly", f"and {more} more problem(s) not listed")]
    if issues:
        raise Invalid(f"{len(issues)} validation error(s): {issues[0].diagnostics}", issues)
    return resource  # type: ignore[return-value]


def _walk(node: object, names: list[str], path: str) -> Iterator[tuple[dict, str]]:
    """Yield (parent object, its path) for every instance of the element path."""
    if not names:
        if isinstance(node, dict):
            yield node, path
        return
    if not isinstance(node, dict):
        return
    child = node.get(names[0])
    if isinstance(child, list):
        for i, c in enumerate(child):
            yield from _walk(c, names[1:], f"{path}.{names[0]}[{i}]")
    elif child is not None:
        yield from _walk(child, names[1:], f"{path}.{names[0]}")


def _present(obj: dict, name: str) -> bool:
    if name.endswith("[x]"):
        stem = name[:-3]
        return any(k.startswith(stem) and k[len(stem):len(stem) + 1].isupper() for k in obj)
    v = obj.get(name)
    return (v is not None and v != [] and v != "") or f"_{name}" in obj


def _required_and_choices(resource: dict, rt: str, root: str) -> Iterator[Issue]:
    for req in required_elements(rt):
        parts = req.split(".")[1:]
        for parent, ppath in _walk(resource, parts[:-1], root):
            if not _present(parent, parts[-1]):
                leaf = parts[-1].replace("[x]", "")
                yield Issue("required", f"{req} is required", (f"{ppath}.{leaf}",))
    for group, _types in choice_groups(rt).items():
        parts = group.split(".")[1:]
        stem = parts[-1]
        for parent, ppath in _walk(resource, parts[:-1], root):
            found = [k for k in parent if k.startswith(stem) and k[len(stem):len(stem) + 1].isupper()]
            if len(found) > 1:
                yield Issue("structure", f"{group}[x] may have only one type; found "
                            + ", ".join(sorted(found)), (f"{ppath}.{stem}[x]",))
    if _bad_extension(resource):  # the paths are only built for a resource that has a problem
        yield from _extensions(resource, root)


def _bad_extension(node: object) -> bool:
    """Whether :func:`_extensions` would find a problem (the same walk without paths)."""
    if isinstance(node, dict):
        for key, val in node.items():
            if key == "contained":
                continue
            if key in ("extension", "modifierExtension") and isinstance(val, list):
                for ext in val:
                    if isinstance(ext, dict) and (
                            not ext.get("url")
                            or sum(1 for k in ext if k.startswith("value") and k[5:6].isupper()) > 1):
                        return True
                    if _bad_extension(ext):
                        return True
            elif isinstance(val, (dict, list)) and _bad_extension(val):
                return True
    elif isinstance(node, list):
        for v in node:
            if isinstance(v, (dict, list)) and _bad_extension(v):
                return True
    return False


def _extensions(node: object, path: str) -> Iterator[Issue]:
    """Extension.url is required and Extension.value[x] has at most one type, everywhere."""
    if isinstance(node, dict):
        for key, val in node.items():
            if key == "contained":
                continue
            if key in ("extension", "modifierExtension") and isinstance(val, list):
                for i, ext in enumerate(val):
                    epath = f"{path}.{key}[{i}]"
                    if isinstance(ext, dict):
                        if not ext.get("url"):
                            yield Issue("required", "Extension.url is required", (f"{epath}.url",))
                        vals = [k for k in ext if k.startswith("value") and k[5:6].isupper()]
                        if len(vals) > 1:
                            yield Issue("structure", "Extension.value[x] may have only one type",
                                        (f"{epath}.value[x]",))
                    yield from _extensions(ext, epath)
            elif isinstance(val, (dict, list)):
                yield from _extensions(val, f"{path}.{key}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _extensions(v, f"{path}[{i}]")
