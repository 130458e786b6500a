"""The storage and pools pages of ``osmo ui``: the storage report is ``osmo store report``'s (figures, charts,
JSON), the pools page shows ``osmo pool list``'s local pool with its capacity, and the holders and problems a
runtime reports (escaped)."""

from __future__ import annotations

import json
import re
import types

import pytest

from osmo_store.report import human_bytes

from .html_dom import parse
from .ui_store import Store, write

CHART_ID = re.compile(r'<svg[^>]* id="(chart-[^"]+)"')


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    st = Store(tmp_path_factory.mktemp("ui-storage")).init()
    src = st.root / "src"
    write(src / "a.bin", bytes(range(256)) * 40)
    write(src / "b.txt", b"b" * 5000)
    st.osmo("dataset", "upload", "alpha", str(src))
    write(src / "c.txt", b"c in v2\n")
    st.osmo("dataset", "upload", "alpha", str(src))
    st.osmo("dataset", "upload", "beta", str(src / "b.txt"))
    return st


@pytest.fixture(scope="module")
def client(store):
    with pytest.MonkeyPatch.context() as mp:
        yield store.client(mp)


def without_time(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "generated"}


def test_storage_json_is_the_cli_report(store, client):
    got = client.get("/api/storage")
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/json")
    expected = json.loads(store.osmo("store", "report", "--json"))
    assert without_time(got.json()) == without_time(expected)
    assert [d["name"] for d in got.json()["datasets"]] == ["alpha", "beta"]
    assert got.json()["costs"]  # the prices were applied, as the CLI does


def test_storage_page_holds_the_report_sections_charts_and_figures(store, client, tmp_path):
    page = client.get("/storage")
    assert page.status_code == 200
    html_file = tmp_path / "report.html"
    store.osmo("store", "report", "--html", str(html_file))
    cli_html = html_file.read_text()
    doc = parse(page.text)
    section = doc.find("section", id="report-figures")
    charts = [svg["id"] for svg in section.find_all("svg") if (svg.attrs.get("id") or "").startswith("chart-")]
    assert charts and sorted(charts) == sorted(CHART_ID.findall(cli_html))
    assert {"chart-costs", "chart-unique", "chart-versions-alpha", "chart-versions-beta"} <= set(charts)
    report = client.get("/api/storage").json()
    cards = {c.children[0].strip(): c.find("span", cls="v").text() for c in section.find_all("div", cls="card")}
    assert cards["stored"] == human_bytes(report["store"]["stored_bytes"])
    assert cards["logical"] == human_bytes(report["store"]["logical_bytes"])
    assert cards["datasets"] == "2"
    assert doc.find("style")  # the report's CSS, in a style element (the CSP allows no inline script)
    assert not [s for s in doc.find_all("script") if not s.attrs.get("src")]


def test_pools_page_lists_the_local_pool_with_its_capacity(store, client):
    expected = {p["pool"]: p for p in json.loads(store.osmo("pool", "list", "--json"))}
    assert "local" in expected
    page = client.get("/pools")
    assert page.status_code == 200
    rows = {r["data-pool"]: r for r in parse(page.text).find("table", id="pools").find_all("tr", data_pool=True)}
    assert set(rows) == set(expected)
    local = rows["local"]
    for kind in ("cpu", "memory", "gpu", "storage"):
        assert float(local.find("td", cls=f"capacity-{kind}")["data-value"]) == expected["local"]["capacity"][kind]
    assert local.find("td", cls="capacity-memory").text() == human_bytes(expected["local"]["capacity"]["memory"])
    api = client.get("/api/pools").json()
    assert [p["pool"] for p in api["pools"]] == list(expected)
    assert api["resources"]["problem"] is None and api["resources"]["pools"][0]["nodes"]


def fake_runtime(problem: str | None) -> types.SimpleNamespace:
    """A runtime reporting one pool with a holder (unit test of the page's logic above osmo_run.api)."""
    figures = {"cpu": 8.0, "memory": 2**34, "gpu": 2, "storage": 10**12}
    used = {"cpu": 2.0, "memory": 2**31, "gpu": 1, "storage": 10**11}
    free = {k: figures[k] - used[k] for k in figures}
    holder = {"holder": "wf-<b>-1/train", "workflow": "wf-<b>-1", "group": "train<i>", "cpu": 2.0,
              "memory": 2**31, "gpu": 1, "gpus": [0]}
    node = {"name": "node-a", "platforms": ["*"], "capacity": figures, "used": used, "free": free,
            "gpus": [{"index": 0, "model": "A100", "uuid": "GPU-1", "held_by": "wf-<b>-1/train"}],
            "holders": [holder]}
    report = {"pool": "gpu-pool", "kind": "kubernetes", "platforms": [], "accepts_any_platform": True,
              "capacity": figures, "used": used, "free": free, "nodes": [node]}
    listing = [{"pool": "gpu-pool", "kind": "kubernetes", "status": "ONLINE", "platforms": ["*"], "nodes": 1,
                "capacity": figures, "used": used, "free": free},
               {"pool": "far", "kind": "kubernetes", "status": "UNREACHABLE", "reason": "cannot reach <far>"}]
    return types.SimpleNamespace(pools=lambda: listing,
                                 resources=lambda: {"pools": [report], "problem": problem})


def test_pools_page_shows_holders_linked_to_workflows_and_a_problem_note(store, monkeypatch):
    client = store.client(monkeypatch, runtime=fake_runtime("cluster <k8s> cannot be read: 403"))
    page = client.get("/pools")
    assert page.status_code == 200
    doc = parse(page.text)
    holder = doc.find("table", id="holders").find("tr", data_workflow="wf-<b>-1")
    assert holder["data-group"] == "train<i>"
    assert holder.find("a")["href"] == "/workflows/wf-%3Cb%3E-1"
    assert [td.text() for td in holder.find_all("td")][4:] == ["2", "2.0 GiB", "1"]
    assert doc.find(id="pools-problem").text() == "cluster <k8s> cannot be read: 403"
    far = doc.find("table", id="pools").find("tr", data_pool="far")
    assert far["data-status"] == "UNREACHABLE" and "cannot reach <far>" in far.text()
    gpu = doc.find("table", id="pools").find("tr", data_pool="gpu-pool")
    assert gpu.find("td", cls="free-gpu").text() == "1"
    assert "<b>" not in page.text and "<k8s>" not in page.text and "<far>" not in page.text
    assert client.get("/api/pools").json()["resources"]["problem"] == "cluster <k8s> cannot be read: 403"
