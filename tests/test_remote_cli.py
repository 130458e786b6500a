"""The CLI on remote stores, as a user runs it: named stores in the config file, S3 and Azure URLs,
a fresh machine seeing everything, kill -9 mid-upload, clear errors."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Cli
from helpers.trees import random_tree, snapshot
from test_crash_safety import assert_one_error_line, random_folder

HELPERS = Path(__file__).parent / "helpers"
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class RemoteCli(Cli):
    """``osmo`` in a subprocess with a private cache and config; ``--store`` only when given."""

    def __init__(self, tmp_path, store: str | None, env: dict | None = None, cache: str = "cache") -> None:
        super().__init__(tmp_path)
        self.store = store
        self.env["OSMO_CACHE_DIR"] = str(tmp_path / cache)
        self.env["OSMO_CONFIG"] = str(tmp_path / "config.yaml")
        self.env.update(env or {})

    def argv(self, *args: str) -> list[str]:
        base = super().argv(*args)
        return base if self.store else [a for a in base if a not in ("--store", None)]


def test_named_s3_store_from_the_config_file(s3_bucket, tmp_path):
    env = {k: "" for k in AWS_VARS}  # credentials and endpoint only from the store's options
    cli = RemoteCli(tmp_path, None, env)
    url = f"{s3_bucket.url}/team-store"
    cli("store", "add", "team", url, "--option", f"endpoint_url={s3_bucket.endpoint_url}",
        "--option", f"key={s3_bucket.key}", "--option", f"secret={s3_bucket.secret}", "--default")
    mode = stat.S_IMODE(os.stat(tmp_path / "config.yaml").st_mode)
    assert mode == 0o600
    listed = cli("store", "list")
    assert "team" in listed.out and url in listed.out and s3_bucket.secret not in listed.out
    as_json = cli("store", "list", "--json").json()
    assert as_json["stores"] == [{"name": "team", "url": url, "default": True, "options": {
        "endpoint_url": s3_bucket.endpoint_url, "key": "***", "secret": "***"}}]

    assert cli("store", "init", "team", "--chunk-min", "256", "--chunk-avg", "1024", "--chunk-max", "4096",
               "--pack-size", "16384", "--json").json()["store"] == f"s3://{url[5:]}"
    src = tmp_path / "src"
    random_tree(src, seed=5, files=30, max_size=10_000)
    up = cli("dataset", "upload", "demo", str(src), "--json").json()  # the default store: team
    assert up["version"] == 1 and up["stored_bytes"] > 0
    assert s3_bucket.filesystem().find(f"{s3_bucket.name}/team-store/log")  # it really went to S3

    fresh = RemoteCli(tmp_path, "team", env, cache="fresh-cache")  # another machine: empty cache
    assert [d["name"] for d in fresh("dataset", "list", "--json").json()] == ["demo"]
    fresh("dataset", "download", "demo", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out", mtimes=False) == snapshot(src, mtimes=False)


def test_store_add_rejects_unknown_options_and_names(tmp_path):
    cli = RemoteCli(tmp_path, None)
    bad = cli("store", "add", "x", "s3://bucket/p", "--option", "colour=blue", check=False)
    assert bad.code == 2
    assert_one_error_line(bad.err, "unknown S3 option", "colour")
    bad = cli("store", "add", "no/slash", "s3://bucket/p", check=False)
    assert bad.code == 2
    assert_one_error_line(bad.err, "no/slash")
    assert not (tmp_path / "config.yaml").exists()


def test_azure_store_from_the_environment(azure_container, tmp_path):
    cli = RemoteCli(tmp_path, f"{azure_container.url}/osmo", azure_container.env)
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=8, files=25, max_size=10_000)
    assert cli("dataset", "upload", "scans", str(src), "--json").json()["version"] == 1
    other = RemoteCli(tmp_path, f"{azure_container.url}/osmo", azure_container.env, cache="other")
    other("dataset", "download", "scans:1", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out", mtimes=False) == snapshot(src, mtimes=False)
    assert other("store", "verify", "--read-data", "--json").json()["ok"] is True


def test_missing_bucket_and_store_are_one_line_errors(s3_bucket, tmp_path):
    cli = RemoteCli(tmp_path, "s3://no-such-bucket-4711/x", s3_bucket.env)
    result = cli("store", "init", check=False)
    assert result.code == 8
    assert_one_error_line(result.err, "s3://no-such-bucket-4711/x", "config", "does not exist")
    cli = RemoteCli(tmp_path, f"{s3_bucket.url}/empty", s3_bucket.env)
    result = cli("dataset", "list", check=False)
    assert result.code == 3
    assert_one_error_line(result.err, f"no osmo store at {s3_bucket.url}/empty")


def test_stores_without_exclusive_create_refuse_commits_unless_opted_in(tmp_path):
    folder = tmp_path / "plain"
    cli = RemoteCli(tmp_path, f"local://{folder}")
    result = cli("store", "init", check=False)
    assert result.code == 2
    assert_one_error_line(result.err, "no atomic exclusive create", "allow_unsafe_create=true")
    assert not folder.exists() or not any(folder.iterdir())
    cli = RemoteCli(tmp_path, None)
    cli("store", "add", "solo", f"local://{folder}", "--option", "allow_unsafe_create=true")
    cli.store = "solo"
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=1, files=5, max_size=5000)
    assert cli("dataset", "upload", "d", str(src), "--json").json()["version"] == 1


def s3_pack_count(bucket, prefix: str) -> int:
    return len(bucket.filesystem(use_listings_cache=False).find(f"{bucket.name}/{prefix}/packs"))


def test_kill_9_mid_upload_to_s3_commits_nothing_and_rerun_reuses_packs(s3_bucket, tmp_path):
    src = tmp_path / "src"
    random_folder(src, seed=77, total=24 * 1024 * 1024)
    cli = RemoteCli(tmp_path, f"{s3_bucket.url}/killed", s3_bucket.env)
    cli("store", "init", "--pack-size", str(1024 * 1024))
    argv = cli.argv("dataset", "upload", "ds", str(src))
    stalling = [sys.executable, str(HELPERS / "stalling_upload.py"), "4", *argv[3:]]  # after `-m osmo_store.cli.main`
    proc = subprocess.Popen(stalling, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stalled", proc.stderr.read()  # 4 packs landed, 5th blocked
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    packs_before = s3_pack_count(s3_bucket, "killed")
    assert packs_before >= 4
    fresh = RemoteCli(tmp_path, f"{s3_bucket.url}/killed", s3_bucket.env, cache="fresh")
    assert fresh("dataset", "list", "--json").json() == []
    assert fresh("store", "verify", "--read-data", "--json").json()["ok"] is True
    rerun = cli("dataset", "upload", "ds", str(src), "--json").json()
    assert rerun["version"] == 1
    assert rerun["stored_bytes"] <= rerun["logical_bytes"] - (packs_before - 1) * 900 * 1024
    fresh("dataset", "download", "ds", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == snapshot(src)
