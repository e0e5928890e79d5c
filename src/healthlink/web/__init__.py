"""Web pages: server-rendered (Jinja2 + htmx, assets vendored in ``static/``), in Simplified
Chinese and English.  ``router`` is included by ``healthlink.api.create_app``."""

from healthlink.web.healthcode_pages import router as _health_code_pages
from healthlink.web.routes import router

router.include_router(_health_code_pages)

__all__ = ["router"]
