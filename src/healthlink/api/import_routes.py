"""FHIR Bulk Data style ``$import``: asynchronous upload with a status URL (docs/ingest.md).

``POST /fhir/$import`` takes NDJSON (``application/fhir+ndjson``), a Bundle
(``application/fhir+json``), or several files as ``multipart/form-data`` parts named
``file``; it answers 202 with ``Content-Location`` naming the status URL.  ``GET`` on the
status URL answers 202 while the upload runs, 200 with the report when it is done.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.errors import HealthLinkError
from healthlink.ingest import import_status, start_import

router = APIRouter(prefix="/fhir", include_in_schema=False)


@router.post("/$import")
async def bulk_import(request: Request, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form() as form:
            files = [(f.filename or "", await f.read()) for f in form.getlist("file") if hasattr(f, "read")]
    else:
        name = "upload.ndjson" if "ndjson" in ctype else "upload.json"
        files = [(name, await request.body())]
    upload_id = start_import(platform.services, files, ctx=ctx, data_dir=platform.settings.data_dir)
    return Response(status_code=202, headers={
        "Content-Location": f"{platform.services.base_url}/$import-status/{upload_id}"})


@router.get("/$import-status/{upload_id}")
def bulk_import_status(upload_id: str, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    status, report = import_status(platform.services, upload_id, ctx=ctx)
    if status == "running":
        return Response(status_code=202, headers={"X-Progress": "running", "Retry-After": "1"})
    if status == "failed":
        raise HealthLinkError(f"upload {upload_id} failed; records committed before the failure are "
                              "kept, and sending the same files again completes it")
    return Response(orjson.dumps(report), status_code=200, media_type="application/json")
