"""Dataset pages: the list, a dataset's versions, a version's file tree, a file's download, a diff.

Every figure comes from the store's facade (``Repository``), the same calls ``osmo dataset list``,
``info``, ``inspect`` and ``diff`` make, so the pages show the CLI's numbers. Unknown datasets,
versions and files raise the store's ``NotFoundError``; the app turns it into its 404 page.
"""

from __future__ import annotations

from typing import Iterator
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from osmo_store.errors import OsmoError
from osmo_store.ids import parse_ref
from osmo_ui.file_tree import attachment_header, build_tree, held_back
from osmo_ui.pages import render
from osmo_ui.sources import Sources


class StreamAborted(Exception):
    """A download failed after its headers were sent (a chunk or the file's digest did not check): the
    only honest answer left is to break the response off, which the server does on this exception."""


def _sources(request: Request) -> Sources:
    return request.app.state.sources


def _name(request: Request) -> str:
    """The dataset name of the URL, checked as ``osmo`` checks it (a bad name: 400)."""
    name = request.path_params["name"]
    ref = parse_ref(name)
    if ref.version is not None or ref.tag is not None:
        raise HTTPException(400, f"invalid dataset name {name!r}")
    return name


def _ref(name: str, version: str) -> str:
    """``NAME:VERSION`` as ``osmo`` takes it; a bad VERSION raises the store's one-line ``UsageError``."""
    ref = f"{name}:{version}"
    parse_ref(ref)
    return ref


def tree_url(name: str, version: object) -> str:
    return f"/datasets/{quote(name, safe='')}/{quote(str(version), safe='')}"


def datasets_page(request: Request) -> Response:
    with _sources(request).repository() as repo:
        rows = repo.list_datasets()
    return render(request, "datasets.html", {"datasets": rows, "tree_url": tree_url})


def dataset_page(request: Request) -> Response:
    name = _name(request)
    with _sources(request).repository() as repo:
        desc = repo.describe(name)
    live = [v["version"] for v in desc["versions"] if not v["deleted"]]
    return render(request, "dataset.html", {"ds": desc, "live": live, "tree_url": tree_url})


def version_page(request: Request) -> Response:
    name = _name(request)
    ref = _ref(name, request.path_params["version"])
    with _sources(request).repository() as repo:
        rec, entries = repo.entries(ref)
    root = build_tree((e.path, e.size) for e in entries)
    base = tree_url(name, rec["version"])

    def file_url(path: str) -> str:
        return f"{base}/file?{urlencode({'path': path})}"

    return render(request, "version.html", {"name": name, "asked": request.path_params["version"], "rec": rec,
                                             "root": root, "file_url": file_url, "files": len(entries)})


def file_download(request: Request) -> Response:
    name = _name(request)
    path = request.query_params.get("path")
    if not path:
        raise HTTPException(400, "missing query parameter 'path' (the file's path in the version)")
    sources = _sources(request)
    with sources.repository() as repo:
        exact = f"{name}:{repo.resolve(_ref(name, request.path_params['version']))['version']}"  # a tag may move
        entry, _ = repo.read_file(exact, path)  # its size; an unknown path: NotFoundError, 404

    def body() -> Iterator[bytes]:
        with sources.repository() as streaming:  # open while the bytes flow, closed when they stop
            _, chunks = streaming.read_file(exact, path)
            try:
                yield from held_back(chunks)
            except OsmoError as exc:  # not the app's error page: the response has started
                raise StreamAborted(f"download of {path!r} from {exact} aborted: {exc}") from exc

    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"Content-Disposition": attachment_header(path),
                                      "Content-Length": str(entry.size), "X-Content-Type-Options": "nosniff"})


def diff_page(request: Request) -> Response:
    name = _name(request)
    a, b = request.query_params.get("a", "").strip(), request.query_params.get("b", "").strip()
    if not a or not b:
        raise HTTPException(400, "diff needs two versions: ?a=VERSION&b=VERSION (numbers or tags of "
                                 f"dataset {name!r})")
    ref_a, ref_b = _ref(name, a), _ref(name, b)
    with _sources(request).repository() as repo:
        figures = repo.diff_summary(ref_a, ref_b)
    return render(request, "diff.html", {"name": name, "a": a, "b": b, "diff": figures})


def routes() -> list[Route]:
    return [Route("/datasets", datasets_page),
            Route("/datasets/{name}", dataset_page),
            Route("/datasets/{name}/diff", diff_page),
            Route("/datasets/{name}/{version}", version_page),
            Route("/datasets/{name}/{version}/file", file_download)]
