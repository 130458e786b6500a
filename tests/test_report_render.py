"""The presentation half of `osmo store report`: prices, cost arithmetic, JSON, CSV, text and HTML."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from osmo_store.errors import UsageError
from osmo_store.report import DEFAULT_PRICES, estimate_costs, load_prices, to_csv, to_html, to_json, to_text
from osmo_store.report.render import CSV_COLUMNS, human_bytes, money

GB = 10**9
GIB = 1024**3
HOSTILE = '<b>&"x"'
FIVE = {"s3-standard", "s3-standard-ia", "azure-hot", "azure-cool", "local-disk"}


def make_report(n_datasets: int, n_versions: int, names: list[str] | None = None) -> dict:
    """A synthetic report of the engine's shape, with growing versions and partial dedup."""
    datasets = []
    for i in range(n_datasets):
        name = names[i] if names else f"ds-{i:02d}"
        versions = []
        for v in range(1, n_versions + 1):
            logical = (i + 1) * GIB + v * 10**8
            stored = logical // (2 + v % 3)
            unique = stored // 2
            versions.append({"version": v, "created": 1795000000.0 + 3600 * v,
                             "tags": ["prod", "<script>alert(1)</script>"] if v == n_versions else [],
                             "logical_bytes": logical, "stored_bytes": stored, "unique_bytes": unique,
                             "new_bytes": stored if v == 1 else stored // 5,
                             "shared_bytes": stored - unique, "dedup_ratio": logical / stored,
                             "compression_ratio": 1.25})
        logical = sum(v["logical_bytes"] for v in versions)
        stored = sum(v["stored_bytes"] for v in versions) // 2
        datasets.append({"name": name, "logical_bytes": logical, "stored_bytes": stored,
                         "unique_bytes": stored // 3 + i, "shared_bytes": stored - stored // 3 - i,
                         "dedup_ratio": logical / stored if stored else 0.0, "compression_ratio": 1.5,
                         "versions": versions})
    stored = sum(d["stored_bytes"] for d in datasets)
    logical = sum(d["logical_bytes"] for d in datasets)
    return {"generated": 1795260869.8,
            "store": {"url": "s3://bucket/prefix", "stored_bytes": stored, "live_bytes": stored,
                      "dead_bytes": 0, "logical_bytes": logical, "packs": 7, "chunks": 900, "objects": 40,
                      "requests": {"upload_per_gb": 16.0, "download_per_gb": 42.5}},
            "datasets": datasets,
            "costs": estimate_costs(stored, logical, load_prices())}


class Charts(HTMLParser):
    """Collects element ids, bars per chart (``rect`` with class ``bar``) and text per chart."""

    def __init__(self, page: str):
        super().__init__()
        self.ids: list[str] = []
        self.bars: Counter[str] = Counter()
        self.texts: dict[str, list[str]] = {}
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.data: list[str] = []
        self._svg: str | None = None
        self._in_text = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        a = dict(attrs)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "svg":
            self._svg = a.get("id")
            self.texts[self._svg] = []
        elif tag == "rect" and "bar" in (a.get("class") or "").split() and self._svg:
            self.bars[self._svg] += 1
        elif tag == "text":
            self._in_text = True

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None
        if tag == "text":
            self._in_text = False

    def handle_data(self, data):
        self.data.append(data)
        if self._in_text and self._svg:
            self.texts[self._svg].append(data)


# --- prices ------------------------------------------------------------------------------------

def test_default_prices_cover_five_classes_with_source_and_date():
    prices = load_prices(None)
    assert set(prices) == FIVE
    for cls, p in prices.items():
        assert p["source"].startswith("https://"), cls
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", p["checked"]), cls
        assert p["label"] and p["region"], cls
        assert p["storage_gb_month"] > 0, cls
        for field in ("write_per_1000", "read_per_1000", "retrieval_per_gb"):
            assert p[field] >= 0, (cls, field)
        assert p["overridden"] == []
    assert prices["s3-standard"]["storage_gb_month"] == 0.023
    assert prices["s3-standard-ia"]["retrieval_per_gb"] > 0 and prices["azure-cool"]["retrieval_per_gb"] > 0
    assert prices["s3-standard"]["retrieval_per_gb"] == 0 and prices["azure-hot"]["retrieval_per_gb"] == 0


def test_overrides_replace_fields_and_add_classes_without_touching_defaults():
    before = copy.deepcopy(DEFAULT_PRICES)
    prices = load_prices({"s3-standard": {"storage_gb_month": 0.021, "region": "eu-west-1"},
                          "minio-lab": {"storage_gb_month": 0.004, "label": "MinIO lab"},
                          "local-disk": {"storage_gb_month": 0}})
    assert prices["s3-standard"]["storage_gb_month"] == 0.021
    assert prices["s3-standard"]["region"] == "eu-west-1"
    assert prices["s3-standard"]["write_per_1000"] == 0.005  # untouched fields keep the default
    assert sorted(prices["s3-standard"]["overridden"]) == ["region", "storage_gb_month"]
    assert prices["minio-lab"]["label"] == "MinIO lab" and prices["minio-lab"]["read_per_1000"] == 0.0
    assert prices["minio-lab"]["source"] == "config file"
    assert prices["local-disk"]["storage_gb_month"] == 0.0
    assert list(prices)[-1] == "minio-lab"
    assert DEFAULT_PRICES == before
    assert load_prices({})["s3-standard"]["storage_gb_month"] == 0.023


@pytest.mark.parametrize("overrides, cls, field", [
    ({"s3-standard": {"storage_gb_month": -0.01}}, "s3-standard", "storage_gb_month"),
    ({"azure-hot": {"write_per_1000": "cheap"}}, "azure-hot", "write_per_1000"),
    ({"azure-cool": {"retrieval_per_gb": True}}, "azure-cool", "retrieval_per_gb"),
    ({"s3-standard-ia": {"read_per_1000": float("nan")}}, "s3-standard-ia", "read_per_1000"),
    ({"local-disk": {"storage_gb_month": float("inf")}}, "local-disk", "storage_gb_month"),
    ({"local-disk": {"storage_gb_monthh": 0.01}}, "local-disk", "storage_gb_monthh"),
    ({"s3-standard": {"label": 42}}, "s3-standard", "label"),
    ({"tape": {"label": "LTO tape"}}, "tape", "storage_gb_month"),
])
def test_bad_overrides_name_the_class_and_the_field(overrides, cls, field):
    with pytest.raises(UsageError) as err:
        load_prices(overrides)
    message = str(err.value)
    assert cls in message and field in message and "\n" not in message
    assert err.value.exit_code == 2


def test_docs_price_table_and_yaml_example_match_the_code():
    costs_md = (Path(__file__).resolve().parent.parent / "docs" / "COSTS.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[1:-1]]
            for line in costs_md.splitlines() if line.startswith("| `")}
    assert set(rows) == FIVE
    for cls, p in DEFAULT_PRICES.items():
        label, _region, storage, write, read, retrieval, source, checked = rows[cls][1:]
        assert label == p["label"] and source == p["source"] and checked == p["checked"]
        assert float(storage) == p["storage_gb_month"]
        assert float(write) == p["write_per_1000"] and float(read) == p["read_per_1000"]
        assert (0.0 if retrieval == "none" else float(retrieval)) == p["retrieval_per_gb"]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", costs_md, re.S).group(1))
    prices = load_prices(example["prices"])
    assert prices["local-disk"]["label"] == "Workstation disk" and "minio-lab" in prices
    by = {c["class"]: c for c in estimate_costs(GB, GB, prices)["classes"]}
    assert by["s3-standard"]["overridden"] == ["storage_gb_month", "region"]
    assert by["s3-standard"]["monthly"] == pytest.approx(0.021)
    assert "from the config file: storage_gb_month, region" in to_html(
        {"store": {}, "datasets": [], "costs": estimate_costs(GB, GB, prices)})


@pytest.mark.parametrize("overrides", [["s3-standard"], {"s3-standard": 0.02}, {"bad name!": {"storage_gb_month": 1}}])
def test_malformed_price_sections_are_usage_errors(overrides):
    with pytest.raises(UsageError):
        load_prices(overrides)


def test_costs_storage_only_against_hand_computed_figures():
    costs = estimate_costs(250 * GB, 1000 * GB, load_prices())
    assert costs["currency"] == "USD" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", costs["as_of"])
    by = {c["class"]: c for c in costs["classes"]}
    assert [c["class"] for c in costs["classes"]] == list(DEFAULT_PRICES)
    # 250 GB x $0.023 = $5.75; 1,000 GB x $0.023 = $23.00
    assert by["s3-standard"]["monthly"] == pytest.approx(5.75)
    assert by["s3-standard"]["monthly_without_dedup"] == pytest.approx(23.0)
    assert by["s3-standard"]["savings"] == pytest.approx(17.25)
    assert by["s3-standard"]["label"] == "S3 Standard" and by["s3-standard"]["storage_gb_month"] == 0.023
    assert by["s3-standard-ia"]["monthly"] == pytest.approx(3.125)      # 250 x 0.0125
    assert by["azure-hot"]["monthly"] == pytest.approx(4.6)             # 250 x 0.0184
    assert by["azure-cool"]["monthly_without_dedup"] == pytest.approx(10.0)
    assert by["local-disk"]["monthly"] == pytest.approx(20.0)           # 250 x 0.08
    assert by["local-disk"]["savings"] == pytest.approx(60.0)


def test_costs_with_requests_and_retrieval():
    traffic = {"writes": 200_000, "reads": 1_000_000, "retrieved_bytes": 50 * GB}
    by = {c["class"]: c for c in estimate_costs(250 * GB, 1000 * GB, load_prices(), traffic)["classes"]}
    # S3 Standard: 200 x $0.005 + 1,000 x $0.0004 = $1.40 of requests, no retrieval fee
    assert by["s3-standard"]["requests"] == pytest.approx(1.4)
    assert by["s3-standard"]["monthly"] == pytest.approx(5.75 + 1.4)
    assert by["s3-standard"]["monthly_without_dedup"] == pytest.approx(23.0 + 1.4)
    assert by["s3-standard"]["savings"] == pytest.approx(17.25)
    # S3 Standard-IA: 250 x 0.0125 + (200 x 0.01 + 1,000 x 0.001) + 50 GB x $0.01
    assert by["s3-standard-ia"]["monthly"] == pytest.approx(3.125 + 3.0 + 0.5)
    assert by["s3-standard-ia"]["retrieval"] == pytest.approx(0.5)
    assert by["local-disk"]["monthly"] == pytest.approx(20.0)


def test_a_gb_is_ten_to_the_ninth_bytes_and_the_function_is_pure():
    prices = load_prices()
    snapshot = copy.deepcopy(prices)
    first = estimate_costs(GIB, GIB, prices)
    assert first["classes"][0]["monthly"] == pytest.approx(1.073741824 * 0.023)
    assert estimate_costs(GIB, GIB, prices) == first
    assert prices == snapshot
    zero = estimate_costs(0, 0, prices)
    assert all(c["monthly"] == 0 and c["savings"] == 0 for c in zero["classes"])


@pytest.mark.parametrize("args", [(-1, 0, None), (0, "x", None), (0, 0, {"puts": 3}), (0, 0, {"reads": -5})])
def test_bad_cost_inputs_are_usage_errors(args):
    stored, logical, traffic = args
    with pytest.raises(UsageError):
        estimate_costs(stored, logical, load_prices(), traffic)


# --- JSON, CSV, text -----------------------------------------------------------------------------

def test_json_round_trip_and_non_finite_ratios():
    report = make_report(3, 4, names=["lidar", HOSTILE, "camera"])
    assert json.loads(to_json(report)) == report
    report["datasets"][0]["dedup_ratio"] = float("inf")
    assert json.loads(to_json(report))["datasets"][0]["dedup_ratio"] is None


def test_csv_has_one_row_per_version_and_one_total_per_dataset():
    report = make_report(3, 5, names=["lidar", HOSTILE, "a,b"])
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    versions = [r for r in rows if r["row"] == "version"]
    totals = [r for r in rows if r["row"] == "total"]
    assert len(versions) == 15 and len(totals) == 3 and len(rows) == 18
    assert [r["dataset"] for r in totals] == ["lidar", HOSTILE, "a,b"]
    first = report["datasets"][1]["versions"][4]
    row = [r for r in versions if r["dataset"] == HOSTILE and r["version"] == "5"][0]
    assert int(row["logical_bytes"]) == first["logical_bytes"]
    assert int(row["stored_bytes"]) == first["stored_bytes"]
    assert float(row["dedup_ratio"]) == pytest.approx(first["dedup_ratio"])
    assert row["tags"] == "prod;<script>alert(1)</script>"
    assert row["created"].startswith("2026-") and row["created"].endswith("+00:00")
    total = totals[0]
    assert total["version"] == "" and int(total["unique_bytes"]) == report["datasets"][0]["unique_bytes"]
    assert to_csv(make_report(0, 0)).splitlines() == [",".join(CSV_COLUMNS)]


def test_human_sizes_and_money():
    assert human_bytes(0) == "0 B" and human_bytes(1023) == "1023 B"
    assert human_bytes(1024) == "1.0 KiB" and human_bytes(1288490188) == "1.2 GiB"
    assert human_bytes(5 * 1024**5) == "5.0 PiB"
    assert money(1234.5) == "$1,234.50" and money(0.0042) == "$0.0042" and money(0) == "$0.00"


def test_text_summary_is_short_and_aligned():
    report = make_report(2, 3, names=["lidar", "camera-front"])
    text = to_text(report)
    lines = text.splitlines()
    assert "s3://bucket/prefix" in lines[0]
    header = next(line for line in lines if line.startswith("DATASET"))
    rows = [line for line in lines if line.startswith(("lidar", "camera-front"))]
    assert len(rows) == 2
    end = header.index("LOGICAL") + len("LOGICAL")  # right-aligned column: values end under the title
    for row in rows:
        assert re.search(r"\d+\.\d (B|KiB|MiB|GiB)$", row[:end]), row
    assert "latest: v3" in text and "GiB" in text
    assert "S3 Standard" in text and "Local disk" in text and "GB = 10^9 bytes" in text
    assert len(lines) < 25
    assert "No datasets." in to_text(make_report(0, 0))


# --- HTML ----------------------------------------------------------------------------------------

def assert_self_contained(page: str) -> None:
    parsed = Charts(page)
    for tag, attr, value in parsed.attrs:
        if attr in ("src", "href", "srcset", "action", "poster", "data", "xlink:href", "background"):
            assert not re.search(r"^\s*(https?:)?//", value or ""), (tag, attr, value)
    low = page.lower()
    assert "<script src" not in low and "@import" not in low and "url(http" not in low and "url(" not in low
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*https?://", low)
    assert parsed.tags["link"] == 0 and parsed.tags["img"] == 0 and parsed.tags["iframe"] == 0
    assert parsed.tags["script"] == 0


def test_html_is_self_contained_and_has_the_charts():
    report = make_report(3, 6, names=["lidar", "camera-front", "sim_assets"])
    page = to_html(report)
    assert_self_contained(page)
    parsed = Charts(page)
    assert len(parsed.ids) == len(set(parsed.ids))
    for name in ("lidar", "camera-front", "sim_assets"):
        assert parsed.bars[f"chart-versions-{name}"] == 12  # new + unique for each of 6 versions
    assert parsed.bars["chart-unique"] == 3
    assert parsed.bars["chart-costs"] == 2 * len(DEFAULT_PRICES)
    assert sum(parsed.bars.values()) == 3 * 12 + 3 + 10
    # the figures are readable: the cost bars carry their amounts, the version chart its axes
    costs_text = " ".join(parsed.texts["chart-costs"])
    first = report["costs"]["classes"][0]
    assert money(first["monthly"]) in costs_text and "S3 Standard" in costs_text
    assert "version" in parsed.texts["chart-versions-lidar"]
    assert any(re.fullmatch(r"[\d.]+ [MG]iB", t) for t in parsed.texts["chart-versions-lidar"])  # axis ticks


def test_html_escapes_names_and_tags():
    page = to_html(make_report(2, 2, names=[HOSTILE, "plain"]))
    assert HOSTILE not in page and "<script>alert" not in page
    assert "&lt;b&gt;&amp;&quot;x&quot;" in page
    parsed = Charts(page)
    assert parsed.tags["b"] == 0 and parsed.tags["script"] == 0
    assert HOSTILE in "".join(parsed.data)  # shown to the reader as typed
    weird = [i for i in parsed.ids if i.startswith("chart-versions-") and i != "chart-versions-plain"]
    assert len(weird) == 1 and re.fullmatch(r"chart-versions-[A-Za-z0-9_-]+", weird[0])
    assert parsed.bars[weird[0]] == 4
    assert_self_contained(page)


def test_html_with_no_dataset_and_with_one_version():
    empty = Charts(to_html(make_report(0, 0)))
    assert "chart-unique" in empty.ids and "chart-costs" in empty.ids
    assert empty.bars["chart-unique"] == 0 and empty.bars["chart-costs"] == 10
    assert not [i for i in empty.ids if i.startswith("chart-versions-")]
    assert "No datasets." in "".join(empty.data)
    one = Charts(to_html(make_report(1, 1, names=["solo"])))
    assert one.bars["chart-versions-solo"] == 2 and one.bars["chart-unique"] == 1
    no_costs = make_report(1, 1)
    del no_costs["costs"]
    assert "chart-costs" not in Charts(to_html(no_costs)).ids


def test_html_with_50_datasets_of_200_versions():
    report = make_report(50, 200)
    page = to_html(report)
    parsed = Charts(page)
    assert_self_contained(page)
    versions_charts = [i for i in parsed.ids if i.startswith("chart-versions-")]
    assert len(versions_charts) == 50
    assert all(parsed.bars[i] == 400 for i in versions_charts)
    assert parsed.bars["chart-unique"] == 10  # top 10 only, largest first
    top = sorted(report["datasets"], key=lambda d: -d["unique_bytes"])[0]["name"]
    shown = [t for t in parsed.texts["chart-unique"] if t.startswith("ds-")]
    assert shown[0] == top and len(set(shown)) == 10
    labels = [t for t in parsed.texts["chart-versions-ds-00"] if re.fullmatch(r"v\d+", t)]
    assert 10 <= len(labels) <= 40  # thinned out: not 200 labels on one axis
    assert len(page) < 12 * 10**6
