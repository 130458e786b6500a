"""Rendering a page: a template with what every page needs (the cross-site token, the nav)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page: ``name`` rendered with ``context`` plus the cross-site token and the current section."""
    state = request.app.state
    return state.templates.TemplateResponse(request, name, {**context, "csrf": state.guard.csrf,
                                                            "nav": request.url.path.split("/")[1]}, status_code=status)


def fragment(request: Request, name: str, **context: Any) -> str:
    """A partial template rendered to a string (sent in live updates)."""
    return request.app.state.templates.get_template(name).render(**context)
