"""The FHIR R4 resource store: validate, store with versions, index, search.

No access logic and no HTTP here; only ``healthlink.access`` calls it for patient data.
"""
