"""The CapabilityStatement at /fhir/metadata, built from what the code supports."""

from __future__ import annotations

from functools import cache

from healthlink import FHIR_VERSION, __version__
from healthlink.access.repository import NOT_STORED
from healthlink.fhir.definitions import resource_types, search_params
from healthlink.fhir.search import PERSON_PARAM, person_searchable

PERSON_SEARCH_PARAMETER_URL = "https://healthlink.example.org/fhir/SearchParameter/person"

# Types whose standard search parameters are all indexed and tested.
FULL_SEARCH = ("Patient", "Practitioner", "PractitionerRole", "Organization", "Location",
               "Encounter", "Observation", "DiagnosticReport", "ImagingStudy", "ServiceRequest",
               "MedicationRequest", "MedicationDispense", "MedicationAdministration",
               "AllergyIntolerance", "Condition", "Procedure", "Consent", "AuditEvent", "Task",
               "Person")
AUDIT_PARAMS = [("date", "date"), ("patient", "reference"), ("entity", "reference"),
                ("agent", "reference"), ("agent-name", "string"), ("action", "token"), ("subtype", "token"),
                ("outcome", "token")]


@cache
def capability_statement(base_url: str, date: str) -> dict:
    resources = []
    for rt in sorted(resource_types()):
        if rt == "AuditEvent":
            resources.append({
                "type": rt,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [{"name": n, "type": ty} for n, ty in AUDIT_PARAMS],
                "documentation": "Read-only: the platform's access log, for the audit administrator.",
            })
            continue
        writes = rt not in NOT_STORED
        params = [{"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"}]
        params += [{"name": c, "type": p.type} for c, p in sorted(search_params(rt).items())]
        if person_searchable(rt):
            params.append({"name": PERSON_PARAM, "type": "reference",
                           "definition": PERSON_SEARCH_PARAMETER_URL,
                           "documentation": "The Person (master patient index) whose linked Patients' "
                                            "resources to return, across institutions as far as the "
                                            "reader may see them: person=Person/<id>."})
        entry = {
            "type": rt,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": writes,
            "conditionalCreate": writes,
            "conditionalUpdate": writes,
            "conditionalDelete": "not-supported",
            "interaction": [{"code": c} for c in ("read", "vread", "update", "delete",
                                                  "history-instance", "history-type", "create",
                                                  "search-type")
                            if writes or c not in ("update", "delete", "create")],
            "searchInclude": ["*"] + [f"{rt}:{c}" for c, p in sorted(search_params(rt).items())
                                      if p.type == "reference"],
            "searchParam": params,
        }
        if not writes:
            entry["documentation"] = NOT_STORED[rt]
        if rt == "Patient":
            entry["operation"] = [{"name": "everything",
                                   "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                                  {"name": "match",
                                   "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"}]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "HealthLink", "version": __version__},
        "implementation": {"description": "HealthLink regional health information platform",
                           "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": (
                "Search: token (system|code, :not, :text), string (:exact, :contains), date "
                "(eq ne lt le gt ge sa eb ap; partial dates), reference (Type/id, :Type, chained "
                "one level), quantity, number, uri, :missing; _id, _lastUpdated, _count, _sort, "
                "_include, _revinclude, _summary=count, _elements, _total=accurate. Paging by "
                "opaque next links (stable while data is written). Unknown parameters are "
                "rejected with 400. Full parameter sets are tested for: " + ", ".join(FULL_SEARCH)),
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "description": "Bearer tokens from /api/auth/login (staff) or /api/auth/token "
                               "(OAuth2 client credentials), carrying SMART v2 scopes.",
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }
