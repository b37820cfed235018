"""Images by catalogue id, never by path: a thumbnail or a larger view of a showable image
(status ok, never a verso), read only from under its catalogue root, as a cached JPEG
rendition."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from drawmatch.core import storage
from drawmatch.core.images import ImageError
from drawmatch.data.renditions import ensure_rendition
from drawmatch.serve.site import MAX_ID, Site, SiteDep, signed_in

router = APIRouter(dependencies=[Depends(signed_in)])


def rendition(site: Site, key: str, size: int) -> Response:
    """The JPEG of image `key` at `size` pixels (404 for anything not showable)."""
    wb = site.workbench
    if len(key) > MAX_ID or key not in wb.sources:
        raise HTTPException(404, "no such image")
    source = wb.sources[key]
    root = wb.roots.get(wb.root_of[key], "")
    if not storage.is_uri(source):
        real = os.path.realpath(source)
        if not real.startswith(os.path.realpath(root) + os.sep):
            raise HTTPException(404, "no such image")
    try:
        data, _made = ensure_rendition(
            wb.out, source, wb.sha[key], size, max_pixels=site.config.max_image_pixels
        )
    except (ImageError, OSError, ValueError):
        raise HTTPException(404, "this image cannot be shown") from None
    return Response(
        data,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{wb.sha[key]}-{size}"'},
    )


@router.get("/thumb/{image_id}")
def thumb(site: SiteDep, image_id: str) -> Response:
    return rendition(site, image_id, site.config.thumb_size)


@router.get("/view/{image_id}")
def view(site: SiteDep, image_id: str) -> Response:
    return rendition(site, image_id, site.config.view_size)
