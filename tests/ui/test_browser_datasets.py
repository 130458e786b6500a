"""The dataset, storage and pool pages of ``osmo ui`` in headless Chromium, over a real local store: every
page loads without console errors, a version's file tree is ``osmo dataset inspect``'s, the diff page is
``osmo dataset diff``'s, a file downloaded through the page's link is byte-identical, the pools table is
``osmo pool list``'s.

One ``osmo ui`` server and one browser serve the whole module (tests/ui/conftest.py); the dataset is
uploaded once, in two versions, with the ``osmo`` CLI. The DOM these tests read is the contract in docs/UI.md."""

from __future__ import annotations

import os
import posixpath
import shutil

import pytest

NAME = "scans"
ODD_PATH = "notes/with space & 100% #1.txt"  # a path that must be escaped in the download link


@pytest.fixture(scope="module")
def versions(ui_osmo, tmp_path_factory) -> dict[int, dict[str, bytes]]:
    """``scans`` version 1 and 2 uploaded with the CLI: {version: {path: bytes}}."""
    folder = tmp_path_factory.mktemp("scans")
    v1 = {"a.txt": b"hello\n", "sub/b.bin": os.urandom(5000), "sub/deep/c.txt": b"deep\n" * 100,
          ODD_PATH: b"odd name\n"}
    v2 = {**{k: v for k, v in v1.items() if k != "sub/b.bin"}, "a.txt": b"hello again\n", "d.txt": b"new\n"}
    found = {}
    for number, files in ((1, v1), (2, v2)):
        shutil.rmtree(folder / "data", ignore_errors=True)
        for path, data in files.items():
            (folder / "data" / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / "data" / path).write_bytes(data)
        out = ui_osmo("dataset", "upload", NAME, str(folder / "data"), group="").out
        assert out.startswith(f"{NAME}:{number} "), out
        found[number] = files
    return found


def _cli(ui_osmo, *args: str):
    return ui_osmo("dataset", *args, "--json", group="").json()


def _folders(paths) -> set[str]:
    found = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent:
            found.add(parent)
            parent = posixpath.dirname(parent)
    return found


def test_every_dataset_page_loads_without_console_errors(page, versions):
    page.open("/datasets", "datasets")
    row = page.find(f"table#datasets tr[data-name='{NAME}']")
    row.find_element("css selector", "a").click()
    page.wait(lambda d: page.path == f"/datasets/{NAME}", "the dataset page after clicking its row's link")
    page.check_console("following the dataset link")
    page.screenshot("dataset")
    assert sorted(r.get_attribute("data-version") for r in page.find_all("table#versions tr[data-version]")) == \
        ["1", "2"]
    page.open(f"/datasets/{NAME}/1", "tree-1")
    page.open(f"/datasets/{NAME}/diff?a=1&b=2", "diff")
    page.open("/storage", "storage")
    assert page.find_all("section#report-figures svg[id^='chart-']"), "no chart in section#report-figures"
    page.open("/pools", "pools")
    page.open("/datasets/no-such-dataset", "unknown-dataset", expect_status=404)
    assert "no-such-dataset" in page.find("body").text


def test_version_tree_is_what_inspect_lists(page, ui_osmo, versions):
    for number in versions:
        listed = {f["path"]: f["size"] for f in _cli(ui_osmo, "inspect", f"{NAME}:{number}")["files"]}
        assert set(listed) == set(versions[number])  # the CLI agrees with what was uploaded
        page.open(f"/datasets/{NAME}/{number}", f"tree-{number}")
        files = {li.get_attribute("data-path"): int(li.get_attribute("data-size"))
                 for li in page.find_all("ul#tree li.file")}
        assert files == listed
        assert {li.get_attribute("data-path") for li in page.find_all("ul#tree li.dir")} == _folders(listed)


def test_diff_page_is_what_diff_says(page, ui_osmo, versions):
    diff = _cli(ui_osmo, "diff", f"{NAME}:1", f"{NAME}:2")
    expected = {(f["path"], change) for change in ("added", "removed", "changed") for f in diff[change]}
    assert expected == {("d.txt", "added"), ("sub/b.bin", "removed"), ("a.txt", "changed")}
    page.open(f"/datasets/{NAME}", "dataset")
    page.choose("select#diff-a", "1")
    page.choose("select#diff-b", "2")
    page.find("button#diff-go").click()
    page.wait(lambda d: page.path.startswith(f"/datasets/{NAME}/diff?"), "the diff page after #diff-go")
    page.wait(lambda d: d.execute_script("return document.readyState") == "complete", "the diff page to load")
    page.screenshot("diff")
    page.check_console("opening the diff")
    rows = {(r.get_attribute("data-path"), r.get_attribute("data-change")) for r in page.find_all("table#diff tr[data-path]")}
    assert rows == expected
    summary = {key: page.attr("#diff-summary", f"data-{key.replace('_', '-')}")
               for key in ("bytes_added", "bytes_removed", "bytes_changed")}
    assert summary == {key: str(diff[key]) for key in summary}
    text = page.find("#diff-summary").text
    assert "1 added" in text and "1 removed" in text and "1 changed" in text, text


def test_downloads_through_the_page_are_byte_identical(page, versions):
    for number, files in versions.items():
        page.open(f"/datasets/{NAME}/{number}", f"tree-{number}")
        links = {li.get_attribute("data-path"): li.find_element("css selector", "a.download").get_attribute("href")
                 for li in page.find_all("ul#tree li.file")}
        assert set(links) == set(files)
        for path, href in links.items():
            assert href.startswith(f"{page.base_url}/datasets/{NAME}/{number}/file?path="), href
            got = page.fetch(href[len(page.base_url):])
            assert got["status"] == 200, (path, got["status"])
            assert got["body"] == files[path], path
            assert got["headers"].get("content-disposition", "").startswith("attachment"), got["headers"]
    page.check_console("downloading")


def test_pools_table_is_what_pool_list_says(page, ui_osmo):
    pools = {p["pool"]: p for p in ui_osmo("pool", "list", "--json", group="").json()}
    page.open("/pools", "pools")
    rows = page.find_all("table#pools tr[data-pool]")
    assert sorted(r.get_attribute("data-pool") for r in rows) == sorted(pools)
    local = pools["local"]
    for kind in ("cpu", "gpu"):
        cell = page.attr(f"table#pools tr[data-pool='local'] td.capacity-{kind}", "data-value")
        assert float(cell) == float(local["capacity"][kind]), (kind, cell)
