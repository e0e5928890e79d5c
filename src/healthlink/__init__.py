"""HealthLink: a regional health information platform on FHIR R4.

Public surface: :func:`healthlink.api.create_app` and :class:`healthlink.settings.Settings`.
"""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"  # the one place the FHIR release is pinned
