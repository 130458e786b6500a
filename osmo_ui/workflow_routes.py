"""Workflow pages: the list (filters, live), one workflow (graph, timeline, tasks, logs, spec), and the
actions (cancel, resubmit with template values).

Live parts are server-sent events: ``/events/workflows`` sends the list's rows when they change,
``/events/workflows/ID`` sends ``reset`` (the client starts over), ``state`` (status and the graph,
timeline and task table rendered here, when anything changed), ``logs`` (new lines, tagged with task,
attempt and source) and ``end`` once the workflow ended and every line was sent. All data comes from
``sources.runtime`` (``osmo_run.api``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from osmo_run.api import RunnerError, SpecError
from osmo_ui.graph import graph_svg
from osmo_ui.pages import fragment, render
from osmo_ui.timeline import epoch, timeline_svg

LOG_BATCH = 2000  # lines per "logs" event
ACTIVE = {"PENDING", "WAITING", "SCHEDULING", "INITIALIZING", "RUNNING"}


def _runtime(request: Request):
    return request.app.state.sources.runtime


def _poll(request: Request) -> float:
    return request.app.state.sources.poll_seconds


async def workflows_page(request: Request) -> Response:
    listing = await run_in_threadpool(_runtime(request).workflows)
    items = list(reversed(listing["workflows"]))  # newest first
    pools = sorted({w["pool"] for w in items})
    return render(request, "workflows.html", {"workflows": items, "problem": listing["problem"], "pools": pools})


async def workflows_json(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_runtime(request).workflows))


async def workflows_events(request: Request) -> Response:
    async def events() -> AsyncIterator[dict]:
        last = None
        while True:
            listing = await run_in_threadpool(_runtime(request).workflows)
            items = list(reversed(listing["workflows"]))
            rows = fragment(request, "_workflow_rows.html", workflows=items)
            if rows != last:
                last = rows
                yield {"event": "rows", "data": json.dumps({"html": rows, "count": len(items)})}
            await asyncio.sleep(_poll(request))
    return EventSourceResponse(events(), ping=15)


def _fragments(request: Request, info: dict) -> dict:
    now = time.time()
    return {"status": info["status"], "reason": info.get("reason"), "exit_code": info.get("exit_code"),
            "active": info["status"] in ACTIVE,
            "graph": graph_svg(info["groups"]),
            "timeline": timeline_svg(info["groups"], epoch(info.get("started")), now),
            "tasks": fragment(request, "_tasks.html", info=info),
            "summary": fragment(request, "_summary.html", info=info),
            "attempts": sorted({a["attempt"] for g in info["groups"] for t in g["tasks"] for a in t["attempts"]})}


async def workflow_page(request: Request) -> Response:
    info = await run_in_threadpool(_runtime(request).workflow, request.path_params["id"])
    return render(request, "workflow.html", {"info": info, "parts": _fragments(request, info),
                                             "tasks": [t["name"] for g in info["groups"] for t in g["tasks"]]})


async def workflow_json(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_runtime(request).workflow, request.path_params["id"]))


def _line(line) -> list:
    return [line.task, line.attempt, line.source, line.text]


async def workflow_logs_json(request: Request) -> Response:
    task = request.query_params.get("task")
    lines, _, finished = await run_in_threadpool(_runtime(request).read_logs, request.path_params["id"], None, task)
    return JSONResponse({"lines": [_line(x) for x in lines], "finished": finished})


async def workflow_events(request: Request) -> Response:
    workflow_id = request.path_params["id"]
    runtime = _runtime(request)

    async def events() -> AsyncIterator[dict]:
        yield {"event": "reset", "data": "{}"}
        last, offsets = None, {}
        while True:
            try:
                info = await run_in_threadpool(runtime.workflow, workflow_id)
                parts = _fragments(request, info)
                lines, offsets, finished = await run_in_threadpool(runtime.read_logs, workflow_id, offsets)
            except (RunnerError, SpecError) as exc:
                yield {"event": "problem", "data": json.dumps({"error": str(exc)})}
                return
            key = json.dumps(parts, sort_keys=True)
            if key != last:
                last = key
                yield {"event": "state", "data": key}
            for start in range(0, len(lines), LOG_BATCH):
                yield {"event": "logs", "data": json.dumps({"lines": [_line(x) for x in lines[start:start + LOG_BATCH]]})}
            if finished and not parts["active"]:
                yield {"event": "end", "data": "{}"}
                return
            await asyncio.sleep(_poll(request))
    return EventSourceResponse(events(), ping=15)


async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the request body must be a JSON object")
    return body


async def cancel(request: Request) -> Response:
    await _body(request)
    result = await run_in_threadpool(_runtime(request).cancel, request.path_params["id"])
    return JSONResponse(result)


def _items(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPException(400, f"{key}: expected a list of NAME=VALUE strings")
    bad = [v for v in value if "=" not in v]
    if bad:
        raise HTTPException(400, f"{key}: {bad[0]!r} is not NAME=VALUE")
    return value


async def resubmit(request: Request) -> Response:
    body = await _body(request)
    set_items, set_strings = _items(body, "set"), _items(body, "set_string")
    new_id = await run_in_threadpool(_runtime(request).resubmit, request.path_params["id"], set_items, set_strings)
    return JSONResponse({"id": new_id, "url": f"/workflows/{new_id}"})


def routes() -> list[Route]:
    return [Route("/workflows", workflows_page), Route("/api/workflows", workflows_json),
            Route("/events/workflows", workflows_events),
            Route("/workflows/{id}", workflow_page), Route("/api/workflows/{id}", workflow_json),
            Route("/api/workflows/{id}/logs", workflow_logs_json),
            Route("/events/workflows/{id}", workflow_events),
            Route("/api/workflows/{id}/cancel", cancel, methods=["POST"]),
            Route("/api/workflows/{id}/resubmit", resubmit, methods=["POST"])]
