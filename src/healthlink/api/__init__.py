"""HTTP adapter: the FastAPI app (FHIR under /fhir, platform API under /api)."""

from healthlink.api.app import create_app

__all__ = ["create_app"]
