"""The web app: routes of every page, templates, static assets, and errors turned into pages.

``create_app(sources, guard)`` builds a Starlette app; ``osmo_ui.cli`` serves it with uvicorn. Pages are
rendered on the server with Jinja2 (autoescaped); live parts (statuses, logs) come as server-sent
events that static/app.js applies. Errors from the runtime and the store are translated here, once:
a page (or a JSON object for /api/ paths) with the error's message and an HTTP status from its kind.
"""

from __future__ import annotations

import logging
import os
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from osmo_run.api import RunnerError, SpecError
from osmo_store.errors import OsmoError
from osmo_ui import dataset_routes, storage_routes, workflow_routes
from osmo_ui.formatting import FILTERS
from osmo_ui.pages import render  # noqa: F401  (the route modules may import it from here too)
from osmo_ui.security import Guard, GuardMiddleware
from osmo_ui.sources import Sources

log = logging.getLogger("osmo_ui")
HERE = os.path.dirname(os.path.abspath(__file__))
# the HTTP status of an error, from its CLI exit code (osmo_store.errors, osmo_run.local.errors)
STATUS_OF_EXIT = {2: 400, 3: 404, 4: 409, 5: 503, 6: 400}


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=os.path.join(HERE, "templates"))
    found.env.filters.update(FILTERS)
    found.env.add_extension("jinja2.ext.do")
    return found


def _error_response(request: Request, status: int, message: str, code: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "code": code}, status_code=status)
    return render(request, "error.html", {"status": status, "message": message, "code": code}, status)


async def _runner_error(request: Request, exc: RunnerError) -> Response:
    return _error_response(request, STATUS_OF_EXIT.get(exc.exit_code, 500), str(exc), exc.code)


async def _spec_error(request: Request, exc: SpecError) -> Response:
    return _error_response(request, 400, str(exc), "spec")


async def _store_error(request: Request, exc: OsmoError) -> Response:
    return _error_response(request, STATUS_OF_EXIT.get(exc.exit_code, 500), str(exc), exc.code)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error_response(request, exc.status_code, str(exc.detail), "http")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("osmo ui: internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
    return _error_response(request, 500, f"internal error: {type(exc).__name__}: {exc}", "internal")


async def _home(request: Request) -> Response:
    return RedirectResponse("/workflows", status_code=303)


def create_app(sources: Sources, guard: Guard) -> Starlette:
    routes = [Route("/", _home), *workflow_routes.routes(), *dataset_routes.routes(), *storage_routes.routes(),
              Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")]
    app = Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, guard=guard)],
                    exception_handlers={RunnerError: _runner_error, SpecError: _spec_error, OsmoError: _store_error,
                                        HTTPException: _http_error, Exception: _unexpected})
    app.state.sources = sources
    app.state.guard = guard
    app.state.templates = templates()
    return app
