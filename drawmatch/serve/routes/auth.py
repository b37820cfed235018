"""Signing in and out: a name (local use) or a token (shared deployment) gives a session cookie."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from drawmatch.serve import security
from drawmatch.serve.site import Site, SiteDep, checked_post

router = APIRouter()

NAME_HELP = "Give your name (letters, digits, spaces, . ' @ -; up to 64 characters)."


def safe_next(target: str) -> str:
    """A local path to go to after signing in (never another site)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/drawings"
    return target


def _login_page(site: Site, request: Request, nonce: str, next: str, error: str | None) -> Response:
    response: Response = site.page(
        request,
        "login.html",
        None,
        nonce=nonce,
        next=safe_next(next),
        tokens=site.tokens is not None,
        error=error,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, site: SiteDep, next: str = "/drawings") -> Response:
    nonce = secrets.token_urlsafe(16)
    response = _login_page(site, request, nonce, next, None)
    response.set_cookie(
        security.LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict"
    )
    return response


@router.post("/login")
def login(
    request: Request,
    site: SiteDep,
    nonce: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/drawings",
) -> Response:
    headers = {k.lower(): v for k, v in request.headers.items()}
    cookie = request.cookies.get(security.LOGIN_COOKIE, "")
    if not security.same_origin(headers, site.config.hosts()) or not (
        cookie and nonce and secrets.compare_digest(cookie, nonce)
    ):
        raise HTTPException(403, "sign-in form expired or sent from another site: reload")
    if site.tokens is not None:
        annotator = security.annotator_for_token(site.tokens, token.strip())
        error = None if annotator else "Unknown token."
    else:
        annotator = name.strip()
        error = None if security.valid_name(annotator) else NAME_HELP
    if error or not annotator:
        response = _login_page(site, request, nonce, next, error)
        response.status_code = 400
        return response
    value, _session = site.signer.session_cookie(annotator)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        security.SESSION_COOKIE,
        value,
        max_age=security.SESSION_MAX_AGE,
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(security.LOGIN_COOKIE)
    return response


@router.post("/logout", dependencies=[Depends(checked_post)])
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE)
    return response
