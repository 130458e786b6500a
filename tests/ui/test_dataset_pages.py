"""The dataset pages of ``osmo ui`` against a real local store built by the ``osmo`` CLI: the list, a dataset's
versions, a version's file tree, file downloads and diffs show what ``osmo dataset list/info/inspect/diff
--json`` say; store strings are escaped; unknown things are 404 and bad parameters 400."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from osmo_store.packs import pack_key
from osmo_store.repository import Repository
from osmo_ui.dataset_routes import StreamAborted

from .html_dom import parse
from .ui_store import Store, write

HOSTILE_DIR = "<script>alert(1)</script>"  # a path may hold < > (the '/' makes it a folder and a file)
HOSTILE_META = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Dataset ``photos``: v1 (tag ``first``, hostile metadata and label), v2 (a file changed, one removed, one
    added), v3 deleted; dataset ``other``: one version sharing data with photos."""
    st = Store(tmp_path_factory.mktemp("ui-datasets")).init()
    rnd = random.Random(16)
    src = st.root / "src"
    write(src / "a.txt", b"alpha\n")
    write(src / "big.bin", rnd.randbytes(40_000))
    write(src / "sub" / "deep" / "c.txt", b"c" * 3000)
    write(src / "sub" / HOSTILE_DIR / "x.txt", b"hostile path\n")
    write(src / "gone.txt", b"removed in v2\n")
    write(src / "odd name & x=1#.txt", b"odd\n")
    st.osmo("dataset", "upload", "photos", str(src), "--metadata", f"note={HOSTILE_META}",
            "--label", f"team={HOSTILE_META}", "--desc", "first upload")
    st.osmo("dataset", "tag", "photos:1", "--set", "first")
    write(src / "a.txt", b"alpha, changed and longer\n")
    (src / "gone.txt").unlink()
    write(src / "new.txt", b"new in v2\n")
    st.osmo("dataset", "upload", "photos", str(src))
    write(src / "v3.txt", b"only in v3\n")
    st.osmo("dataset", "upload", "photos", str(src))
    st.osmo("dataset", "delete", "photos:3")
    st.osmo("dataset", "upload", "other", str(src / "sub"))
    return st


@pytest.fixture(scope="module")
def client(store):
    with pytest.MonkeyPatch.context() as mp:
        yield store.client(mp)


def test_store_fixture_has_what_the_tests_need(store):
    info = store.json("dataset", "info", "photos")
    assert [(v["version"], v["deleted"]) for v in info["versions"]] == [(1, False), (2, False), (3, True)]


def test_list_shows_every_dataset_with_the_cli_figures(store, client):
    expected = store.json("dataset", "list")
    page = client.get("/datasets")
    assert page.status_code == 200
    table = parse(page.text).find("table", id="datasets")
    rows = table.find_all("tr", data_name=True)
    assert [r["data-name"] for r in rows] == [d["name"] for d in expected]
    for row, d in zip(rows, expected):
        assert row.find("a")["href"] == f"/datasets/{d['name']}"
        assert int(row.find("td", cls="logical")["data-bytes"]) == d["logical_bytes"]
        assert int(row.find("td", cls="logical-all")["data-bytes"]) == d["logical_bytes_all"]
        assert int(row.find("td", cls="stored")["data-bytes"]) == d["stored_bytes"]
        assert row.find("td", cls="dedup").text() == f"{d['dedup_ratio']:.2f}x"
        assert row.find("td", cls="versions").text() == str(d["versions"])
    assert "<img src=x" not in page.text and "team=&lt;img src=x onerror=alert(2)&gt;" in page.text


def test_dataset_page_shows_versions_with_usage_tags_and_metadata(store, client):
    info = store.json("dataset", "info", "photos")
    page = client.get("/datasets/photos")
    assert page.status_code == 200
    doc = parse(page.text)
    rows = {r["data-version"]: r for r in doc.find("table", id="versions").find_all("tr", data_version=True)}
    assert sorted(rows) == ["1", "2", "3"]
    for v in info["versions"]:
        row = rows[str(v["version"])]
        assert row["data-status"] == v["status"]
        assert int(row.find("td", cls="logical")["data-bytes"]) == v["logical_bytes"]
        if v["deleted"]:
            assert "deleted" in row["class"] and not row.find_all("a", cls="tree")
            continue
        assert int(row.find("td", cls="unique")["data-bytes"]) == v["usage"]["unique_bytes"]
        assert int(row.find("td", cls="stored")["data-bytes"]) == v["usage"]["stored_bytes"]
        assert int(row.find("td", cls="new")["data-bytes"]) == v["new_bytes"]
        assert row.find("td", cls="tags").text().split() == v["tags"]
        assert row.find("a", cls="tree")["href"] == f"/datasets/photos/{v['version']}"
    assert rows["1"].find("td", cls="metadata").text().startswith(f"note={HOSTILE_META}")
    assert "<img src=x" not in page.text  # escaped, in metadata and labels
    labels = doc.find("dl", id="labels")
    assert (labels.find("dt").text(), labels.find("dd").text()) == ("team", HOSTILE_META)
    # the diff picker offers the live versions and navigates to the diff page (a GET form: no script)
    form = doc.find("form", id="diff-form")
    assert form["action"] == "/datasets/photos/diff" and form.find("button", id="diff-go")
    assert [o["value"] for o in doc.find("select", id="diff-a").find_all("option")] == ["1", "2"]
    assert [o["value"] for o in doc.find("select", id="diff-b").find_all("option")] == ["1", "2"]


@pytest.mark.parametrize("version", ["1", "2", "first", "latest"])
def test_tree_lists_exactly_the_files_of_the_version(store, client, version):
    expected = store.json("dataset", "inspect", f"photos:{version}")
    page = client.get(f"/datasets/photos/{version}")
    assert page.status_code == 200
    tree = parse(page.text).find("ul", id="tree")
    files = tree.find_all("li", cls="file")
    assert sorted((f["data-path"], int(f["data-size"])) for f in files) == \
        sorted((f["path"], f["size"]) for f in expected["files"])
    dirs = {d["data-path"] for d in tree.find_all("li", cls="dir")}
    assert dirs == {"sub", "sub/deep", "sub/<script>alert(1)<", f"sub/{HOSTILE_DIR}"}
    assert all(d.find_all("details") for d in tree.find_all("li", cls="dir"))
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;" in page.text


def test_download_is_byte_identical_and_an_attachment(store, client):
    src = store.root / "src"
    for path in ["big.bin", "odd name & x=1#.txt", f"sub/{HOSTILE_DIR}/x.txt", "sub/deep/c.txt"]:
        tree = parse(client.get("/datasets/photos/2").text)
        link = tree.find("li", cls="file", data_path=path).find("a", cls="download")["href"]
        got = client.get(link)
        assert got.status_code == 200, (path, got.text)
        assert got.content == (src / path).read_bytes()
        assert got.headers["content-type"] == "application/octet-stream"
        disposition = got.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="') and "<" not in disposition and "/" not in \
            disposition.split("filename*=")[0]
    assert 'filename="odd_name_x_1_.txt"' in client.get(
        "/datasets/photos/2/file", params={"path": "odd name & x=1#.txt"}).headers["content-disposition"]
    by_tag = client.get("/datasets/photos/first/file", params={"path": "a.txt"})  # a tag names the version
    assert by_tag.status_code == 200 and by_tag.content == b"alpha\n"
    assert client.get("/datasets/photos/first/file", params={"path": "new.txt"}).status_code == 404  # v1 lacks it


def test_unknown_things_are_404_and_bad_parameters_400(client):
    assert client.get("/datasets/nosuch").status_code == 404
    assert "nosuch" in parse(client.get("/datasets/nosuch").text).find(id="error").text()
    assert client.get("/datasets/photos/9").status_code == 404
    assert client.get("/datasets/photos/3").status_code == 404  # deleted
    assert client.get("/datasets/photos/2/file", params={"path": "nope.txt"}).status_code == 404
    assert client.get("/datasets/photos/2/file").status_code == 400
    for query in ["", "?a=1", "?b=2", "?a=&b=2", "?a=bad%20tag&b=1", "?a=-1&b=2", "?a=1&b=x:y"]:
        got = client.get(f"/datasets/photos/diff{query}")
        assert got.status_code == 400, query
        message = parse(got.text).find("p", cls="message").text()
        assert message and "\n" not in message and "Traceback" not in got.text
    assert client.get("/datasets/photos/diff?a=1&b=99").status_code == 404


@pytest.mark.parametrize("a,b", [("1", "2"), ("2", "1"), ("first", "latest"), ("2", "2")])
def test_diff_rows_and_summary_equal_the_cli(store, client, a, b):
    expected = store.json("dataset", "diff", f"photos:{a}", f"photos:{b}")
    page = client.get("/datasets/photos/diff", params={"a": a, "b": b})
    assert page.status_code == 200
    doc = parse(page.text)
    rows = doc.find("table", id="diff").find_all("tr", data_change=True)
    got = {kind: sorted(r["data-path"] for r in rows if r["data-change"] == kind)
           for kind in ("added", "removed", "changed")}
    assert got == {kind: sorted(f["path"] for f in expected[kind]) for kind in ("added", "removed", "changed")}
    summary = doc.find(id="diff-summary")
    for kind in ("added", "removed", "changed"):
        assert int(summary[f"data-{kind}"]) == len(expected[kind])
        assert int(summary[f"data-bytes-{kind}"]) == expected[f"bytes_{kind}"]
    if (a, b) == ("1", "2"):
        assert got == {"added": ["new.txt"], "removed": ["gone.txt"], "changed": ["a.txt"]}


def test_a_download_that_fails_its_check_aborts_and_never_arrives_whole(tmp_path, monkeypatch):
    st = Store(tmp_path).init()
    write(tmp_path / "src" / "big.bin", random.Random(7).randbytes(30_000))
    st.osmo("dataset", "upload", "ds", str(tmp_path / "src"))
    monkeypatch.setenv("OSMO_CACHE_DIR", st.env["OSMO_CACHE_DIR"])
    with Repository.open(st.path) as repo:
        _, entries = repo.entries("ds:1")
        last_chunk = entries[0].chunks[-1][0]
        loc = repo.index.chunk_location(last_chunk)
    pack = Path(st.path) / pack_key(loc.pack_id)
    data = bytearray(pack.read_bytes())
    data[loc.offset + loc.stored_length // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    client = st.client(monkeypatch)
    with pytest.raises(StreamAborted, match="big.bin"):  # the stream raises: the server aborts the response
        client.get("/datasets/ds/1/file", params={"path": "big.bin"})
    quiet = TestClient(client.app, headers={"Host": "127.0.0.1"}, raise_server_exceptions=False)
    got = quiet.get("/datasets/ds/1/file", params={"path": "big.bin"})
    assert len(got.content) < 30_000  # what arrived is short of the announced length: not a success
    assert int(got.headers.get("content-length", 30_000)) == 30_000
