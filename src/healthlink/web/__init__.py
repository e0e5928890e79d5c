"""Web pages: server-rendered (Jinja2 + htmx, assets vendored in ``static/``), in Simplified
Chinese and English.  ``router`` is included by ``healthlink.api.create_app``."""

from healthlink.web.routes import router

__all__ = ["router"]
