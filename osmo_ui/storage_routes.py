"""Storage and pools pages: the storage report as ``osmo store report`` computes it, and the pools' capacity
and holders as ``osmo pool list`` and ``osmo resource list`` give them (each also as JSON under /api/)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from osmo_store.report import HTML_CSS, estimate_costs, load_prices, to_html_sections, to_json
from osmo_store.userconfig import UserConfig
from osmo_ui.pages import render
from osmo_ui.sources import Sources

KINDS = ("cpu", "memory", "gpu", "storage")


def storage_report(sources: Sources) -> dict[str, Any]:
    """``osmo store report --json``'s data: the store's report plus the monthly costs at the configured prices."""
    prices = load_prices(UserConfig.load().prices)  # bad prices fail before the scan, as in the CLI
    with sources.repository() as repo:
        data = repo.report()
    data["costs"] = estimate_costs(data["store"]["stored_bytes"], data["store"]["logical_bytes"], prices)
    return data


def storage_page(request: Request) -> Response:
    data = storage_report(request.app.state.sources)
    # the report's own HTML: every value in it is escaped by osmo_store.report.html
    return render(request, "storage.html", {"sections": Markup(to_html_sections(data)), "css": Markup(HTML_CSS)})


def storage_json(request: Request) -> Response:
    text = to_json(storage_report(request.app.state.sources))
    return Response(text, media_type="application/json")


def pools_data(runtime: Any) -> dict[str, Any]:
    """``{"pools": osmo pool list --json, "resources": {"pools": osmo resource list --json, "problem"}}``."""
    return {"pools": runtime.pools(), "resources": runtime.resources()}


def holders(resources: dict[str, Any]) -> list[dict[str, Any]]:
    """Who holds what, one row per holder with its pool and node."""
    return [{**h, "pool": report["pool"], "node": node["name"]}
            for report in resources.get("pools", []) for node in report.get("nodes", [])
            for h in node.get("holders", [])]


def pools_page(request: Request) -> Response:
    data = pools_data(request.app.state.sources.runtime)
    return render(request, "pools.html", {"pools": data["pools"], "reports": data["resources"]["pools"],
                                          "problem": data["resources"]["problem"],
                                          "holders": holders(data["resources"]), "kinds": KINDS})


def pools_json(request: Request) -> Response:
    return JSONResponse(pools_data(request.app.state.sources.runtime))


def routes() -> list[Route]:
    return [Route("/storage", storage_page), Route("/api/storage", storage_json),
            Route("/pools", pools_page), Route("/api/pools", pools_json)]
