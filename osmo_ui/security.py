"""Safe by default: who may talk to ``osmo ui``.

- Bound to a loopback address, requests must name a loopback host (``127.0.0.1``, ``localhost``,
  ``[::1]``): a web page elsewhere cannot reach the UI through a DNS name that points at 127.0.0.1
  (DNS rebinding).
- Bound to any other address, every request needs the server's token: once in the URL
  (``?token=...``, printed at start, as Jupyter does), after which a cookie (HttpOnly, SameSite=Strict)
  carries it. Without it: 403.
- Every state-changing request (POST) must carry the page's cross-site token in the ``X-Osmo-CSRF``
  header, be JSON, and come from the UI's own origin when the browser says where it comes from. A
  form or script of another site can send none of these.
Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

TOKEN_COOKIE = "osmo_ui_token"
CSRF_HEADER = "x-osmo-csrf"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Guard:
    """The server's checks: ``token`` None means no token is asked (loopback); ``csrf`` is per server."""

    bind_host: str
    token: str | None
    csrf: str = field(default_factory=new_token)

    @classmethod
    def for_host(cls, host: str, token: str | None = None) -> "Guard":
        """Loopback: no token unless one is given. Any other address: the given token, else a new one."""
        if token is None and not is_loopback(host):
            token = new_token()
        return cls(host, token)

    def host_allowed(self, header: str) -> bool:
        if not is_loopback(self.bind_host):
            return True
        name = urlsplit(f"//{header}").hostname or ""
        return is_loopback(name)

    def token_ok(self, given: str | None) -> bool:
        return self.token is None or (given is not None and hmac.compare_digest(given, self.token))

    def csrf_ok(self, request: Request) -> bool:
        given = request.headers.get(CSRF_HEADER)
        if given is None or not hmac.compare_digest(given, self.csrf):
            return False
        if not request.headers.get("content-type", "").startswith("application/json"):
            return False
        origin = request.headers.get("origin")
        if origin and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                return False
        return True


class GuardMiddleware(BaseHTTPMiddleware):
    """Applies a ``Guard`` to every request (before any route runs)."""

    def __init__(self, app, guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next) -> Response:
        guard = self.guard
        if not guard.host_allowed(request.headers.get("host", "")):
            return PlainTextResponse("osmo ui: this server answers only to 127.0.0.1 and localhost\n", 403)
        given = request.query_params.get("token")
        if guard.token is not None:
            if given is not None and guard.token_ok(given):
                # the token moves into a cookie; the URL loses it (kept out of history and referrers)
                url = request.url.remove_query_params("token")
                response = RedirectResponse(str(url), status_code=303)
                response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
                return response
            if not guard.token_ok(request.cookies.get(TOKEN_COOKIE)):
                return PlainTextResponse("osmo ui: a token is needed: open the URL 'osmo ui' printed\n", 403)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not guard.csrf_ok(request):
            return PlainTextResponse("osmo ui: refused: a state-changing request without this page's "
                                     "cross-site token\n", 403)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                    "frame-ancestors 'none'")
        return response
