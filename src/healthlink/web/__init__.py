"""Web pages: server-rendered (Jinja2 + htmx, assets vendored in ``static/``), in Simplified
Chinese and English.  ``router`` is included by ``healthlink.api.create_app``.

The staff pages (``routes``, ``healthcode_pages``, ``grant_pages``: consultation access to other
institutions' records; ``ledger_pages``: the audit administrator's ledger status and audit
log; ``recognition_pages``: order entry with the pop-up of recognisable results, and the
recognition rates), the patient portal (``portal``: its
``portal_session`` and ``render_portal`` serve the other portal pages too), the patient's grant
pages (``portal_grants``: my authorisations, scanning a doctor's QR, who saw my records;
``portal_records``: my records from every institution) and the
demo phone (``demo_phone``, only with the outbox SMS gateway)."""

from healthlink.web.demo_phone import router as _demo_phone
from healthlink.web.grant_pages import router as _grant_pages
from healthlink.web.healthcode_pages import router as _health_code_pages
from healthlink.web.bedside_pages import router as _bedside_pages
from healthlink.web.dashboard_pages import router as _dashboard_pages
from healthlink.web.ledger_pages import router as _ledger_pages
from healthlink.web.medsafety_pages import router as _medsafety_pages
from healthlink.web.portal import router as _portal
from healthlink.web.portal_grants import router as _portal_grants
from healthlink.web.portal_records import router as _portal_records
from healthlink.web.prereview_pages import router as _prereview_pages
from healthlink.web.recognition_pages import router as _recognition_pages
from healthlink.web.routes import router

router.include_router(_health_code_pages)
router.include_router(_grant_pages)
router.include_router(_ledger_pages)
router.include_router(_recognition_pages)
router.include_router(_medsafety_pages)
router.include_router(_prereview_pages)
router.include_router(_bedside_pages)
router.include_router(_dashboard_pages)
router.include_router(_portal)
router.include_router(_portal_grants)
router.include_router(_portal_records)
router.include_router(_demo_phone)

__all__ = ["router"]
