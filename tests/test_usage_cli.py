"""``osmo store report``, ``osmo dataset retain`` and the sizes of ``dataset list``/``info``, run as a
user runs them: separate processes on a real local store."""

from __future__ import annotations

import csv
import io
import json
import os

import yaml

from helpers.trees import random_tree
from test_cli_e2e import assert_error


def populated(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=1, files=15, max_size=5000)
    cli("dataset", "upload", "lidar", str(src))
    random_tree(src / "more", seed=2, files=5, max_size=5000)
    cli("dataset", "upload", "lidar", str(src))
    cli("dataset", "upload", "copy", str(src / "more"))
    return src


def test_report_formats_agree(cli, tmp_path):
    populated(cli, tmp_path)
    data = json.loads(cli("store", "report", "--json").out)
    assert [d["name"] for d in data["datasets"]] == ["copy", "lidar"]  # by name
    assert data["store"]["stored_bytes"] == sum(os.path.getsize(os.path.join(d, f))
                                                for d, _, fs in os.walk(os.path.join(cli.store, "packs")) for f in fs)
    assert {c["class"] for c in data["costs"]["classes"]} >= {"s3-standard", "azure-cool", "local-disk"}
    s3 = next(c for c in data["costs"]["classes"] if c["class"] == "s3-standard")
    assert s3["storage"] == data["store"]["stored_bytes"] / 1e9 * 0.023
    rows = list(csv.DictReader(io.StringIO(cli("store", "report", "--csv").out)))
    lidar2 = next(r for r in rows if r["dataset"] == "lidar" and r["version"] == "2")
    assert int(lidar2["unique_bytes"]) == data["datasets"][1]["versions"][1]["unique_bytes"]
    text = cli("store", "report").out
    assert "lidar" in text and "S3 Standard" in text and "Monthly storage cost" in text
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    assert "report.html" in cli("store", "report", "--html", str(page)).out
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "chart-costs" in html and "lidar" in html
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temporary left behind
    one = json.loads(cli("store", "report", "--dataset", "copy", "--json").out)
    assert [d["name"] for d in one["datasets"]] == ["copy"]


def test_report_errors_are_one_line(cli, tmp_path):
    populated(cli, tmp_path)
    assert_error(cli("store", "report", "--dataset", "nope", check=False), 3, "nope")
    both = cli("store", "report", "--json", "--html", str(tmp_path / "x.html"), check=False)
    assert both.code == 2 and both.out == "" and json.loads(both.err)["code"] == "usage"  # --json: a JSON error
    assert "--html" in json.loads(both.err)["error"]
    assert_error(cli("store", "report", "--html", str(tmp_path / "no" / "x.html"), check=False), 2, "x.html")
    config = tmp_path / "osmo-config.yaml"
    config.write_text(yaml.safe_dump({"prices": {"s3-standard": {"storage_gb_month": "cheap"}}}))
    assert_error(cli("store", "report", check=False), 2, "s3-standard", "storage_gb_month")


def test_prices_from_the_config_are_used_and_survive_config_edits(cli, tmp_path):
    populated(cli, tmp_path)
    config = tmp_path / "osmo-config.yaml"
    prices = {"s3-standard": {"storage_gb_month": 1.5}, "nas": {"storage_gb_month": 0.001, "label": "Our NAS"}}
    config.write_text(yaml.safe_dump({"prices": prices}))
    cli("store", "add", "elsewhere", str(tmp_path / "other"))  # rewrites the config file
    assert yaml.safe_load(config.read_text())["prices"] == prices
    data = json.loads(cli("store", "report", "--json").out)
    classes = {c["class"]: c for c in data["costs"]["classes"]}
    assert classes["s3-standard"]["storage_gb_month"] == 1.5 and classes["s3-standard"]["overridden"]
    assert classes["nas"]["label"] == "Our NAS"


def test_retain_dry_run_then_for_real(cli, tmp_path):
    src = populated(cli, tmp_path)
    (src / "extra.bin").write_bytes(os.urandom(20000))
    cli("dataset", "upload", "lidar", str(src))
    cli("dataset", "tag", "lidar:1", "--set", "golden")
    dry = json.loads(cli("dataset", "retain", "lidar", "--keep-last", "1", "--keep-tagged", "--dry-run",
                         "--json").out)
    assert dry["delete"] == [2] and dry["deleted"] == []
    text = cli("dataset", "retain", "lidar", "--keep-last", "1", "--keep-tagged", "--dry-run").out
    assert "would delete 1 of 3 versions" in text and "tagged golden" in text
    done = json.loads(cli("dataset", "retain", "lidar", "--keep-last", "1", "--keep-tagged", "--json").out)
    assert done["deleted"] == [2]
    info = json.loads(cli("dataset", "info", "lidar", "--json").out)
    assert [v["version"] for v in info["versions"] if not v["deleted"]] == [1, 3]
    assert_error(cli("dataset", "retain", "lidar", check=False), 2, "--keep-last")
    assert_error(cli("dataset", "retain", "lidar", "--keep-within", "soon", check=False), 2, "--keep-within")
    assert_error(cli("dataset", "retain", "nope", "--keep-last", "2", check=False), 3, "nope")


def test_list_and_info_show_stored_and_dedup(cli, tmp_path):
    populated(cli, tmp_path)
    listed = {r["name"]: r for r in json.loads(cli("dataset", "list", "--json").out)}
    assert listed["lidar"]["logical_bytes_all"] > listed["lidar"]["stored_bytes"] > 0
    assert listed["lidar"]["dedup_ratio"] > 1.5  # v2 repeats all of v1
    table = cli("dataset", "list").out
    assert "stored" in table and "dedup" in table and f"{listed['lidar']['dedup_ratio']:.2f}x" in table
    info = cli("dataset", "info", "lidar").out
    assert "unique" in info and "stored" in info and "dedup" in info.splitlines()[0]
