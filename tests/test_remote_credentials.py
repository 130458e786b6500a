"""Credentials, endpoints and secrets, against moto (S3) and Azurite:

* secrets given as store options or found in the environment never appear in anything osmo prints
  (text, ``--json``, one-line errors, ``--debug`` tracebacks) or logs (the retry layer's records);
* ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL``; an AWS profile from the shared
  credentials file is used (``$AWS_PROFILE`` or the store option ``profile``), and without any
  credentials the command fails with one line;
* ``abfs://container/prefix`` names the same store as ``az://container/prefix``, and
  ``osmo store init URL`` takes the URL as its argument.
"""

from __future__ import annotations

import logging
import uuid

from helpers.trees import random_tree, snapshot
from osmo_store.blob import open_blob_store
from osmo_store.blob.retry import RetryingBlobStore, RetryPolicy
from osmo_store.blob.wrappers import FaultyBlobStore
from osmo_store.repository import Repository, init_store
from osmo_store.transfer.upload import UploadRequest
from test_crash_safety import assert_one_error_line
from test_remote_cli import AWS_VARS, RemoteCli

AZURE_VARS = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN")
TINY = ("--chunk-min", "256", "--chunk-avg", "1024", "--chunk-max", "4096", "--pack-size", "16384")


def _everything_printed(cli: RemoteCli, tmp_path, name: str) -> str:
    """Run the commands a user runs on store ``name`` (success and failure paths); all output."""
    src = tmp_path / f"src-{name}"
    random_tree(src, seed=6, files=20, max_size=8000)
    runs = [
        cli("store", "list"), cli("store", "list", "--json"),
        cli("--store", name, "store", "init", *TINY), cli("--store", name, "store", "init", "--json", check=False),
        cli("--store", name, "dataset", "upload", "demo", str(src)),
        cli("--store", name, "dataset", "upload", "demo", str(src), "--json"),
        cli("--store", name, "dataset", "list"), cli("--store", name, "dataset", "list", "--json"),
        cli("--store", name, "dataset", "info", "demo", "--json"),
        cli("--store", name, "store", "stats", "--json"), cli("--store", name, "store", "report", "--json"),
        cli("--store", name, "store", "verify", "--read-data"),
        cli("--store", name, "dataset", "download", "demo", str(tmp_path / f"out-{name}"), "--json"),
        cli("--store", name, "--debug", "dataset", "download", "nosuch", str(tmp_path / "x"), check=False),
        cli("--store", name, "--debug", "dataset", "upload", "bad/name", str(src), check=False),
    ]
    assert snapshot(tmp_path / f"out-{name}", mtimes=False) == snapshot(src, mtimes=False)
    assert runs[3].code == 4 and runs[-1].code == 2  # the failure paths really ran
    return "\n".join(r.out + r.err for r in runs)


class _Cli(RemoteCli):
    """RemoteCli whose arguments are given in full (``--store`` included) by each call."""

    def argv(self, *args: str) -> list[str]:
        return [a for a in super().argv(*args) if a is not None][:3] + list(args)


def test_secrets_in_store_options_are_never_printed(s3_bucket, azure_container, tmp_path):
    env = {k: "" for k in AWS_VARS + AZURE_VARS}  # credentials only from the config file
    cli = _Cli(tmp_path, None, env)
    secret = "osmo-test-secret"  # what moto accepts; checked below that it is what the store uses
    assert s3_bucket.secret == secret
    added = [cli("store", "add", "s3team", f"{s3_bucket.url}/sec", "--option", f"key={s3_bucket.key}",
                 "--option", f"secret={secret}", "--option", f"endpoint_url={s3_bucket.endpoint_url}"),
             cli("store", "add", "azteam", f"{azure_container.url}/sec", "--json",
                 "--option", f"connection_string={azure_container.connection_string}")]
    account_key = azure_container.connection_string.split("AccountKey=")[1].split(";")[0]
    printed = "\n".join(r.out + r.err for r in added)
    printed += _everything_printed(cli, tmp_path, "s3team")
    printed += _everything_printed(cli, tmp_path, "azteam")
    assert "demo" in printed and "***" in printed
    for needle in (secret, account_key, azure_container.connection_string, account_key[:16]):
        assert needle not in printed
    # the file itself holds them (mode 0600, checked in test_remote_cli), so the stores really used them
    assert secret in (tmp_path / "config.yaml").read_text()


def test_secrets_from_the_environment_are_never_printed(s3_bucket, azure_container, tmp_path):
    cli = _Cli(tmp_path, None, {**s3_bucket.env, **azure_container.env})
    printed = ""
    for url in (f"{s3_bucket.url}/env", f"{azure_container.url}/env"):
        cli("store", "add", url.split(":")[0] + "env", url)
        printed += _everything_printed(cli, tmp_path, url.split(":")[0] + "env")
    account_key = azure_container.connection_string.split("AccountKey=")[1].split(";")[0]
    assert s3_bucket.secret not in printed and account_key not in printed


def test_retry_log_records_carry_no_secret(s3_bucket, tmp_path, tiny_config, caplog):
    options = {"key": s3_bucket.key, "secret": s3_bucket.secret, "endpoint_url": s3_bucket.endpoint_url}
    inner = open_blob_store(f"{s3_bucket.url}/logged", options)
    blob = RetryingBlobStore(FaultyBlobStore(inner, rate=0.2, seed=3), RetryPolicy(attempts=30, base_delay=0.001))
    init_store(blob, tiny_config)
    src = tmp_path / "src"
    random_tree(src, seed=4, files=20, max_size=10_000)
    with caplog.at_level(logging.DEBUG, logger="osmo"):
        with Repository(blob, tiny_config, cache_dir=str(tmp_path / "cache")) as repo:
            repo.upload(UploadRequest("logged", [str(src)]))
    osmo_records = [r for r in caplog.records if r.name.startswith("osmo")]
    assert blob.retries > 0 and osmo_records  # the retry layer did log
    text = "\n".join(r.getMessage() for r in osmo_records)
    assert s3_bucket.secret not in text and s3_bucket.key not in text


def test_endpoint_from_aws_endpoint_url_s3_wins_over_aws_endpoint_url(s3_bucket, tmp_path):
    env = {**s3_bucket.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_S3": s3_bucket.endpoint_url}
    cli = RemoteCli(tmp_path, f"{s3_bucket.url}/ep", env)
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=2, files=5, max_size=5000)
    assert cli("dataset", "upload", "ep", str(src), "--json").json()["version"] == 1
    assert s3_bucket.filesystem().find(f"{s3_bucket.name}/ep/log")  # it went to the S3 endpoint


def test_aws_profile_from_the_shared_credentials_file(s3_bucket, tmp_path):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        f"[robotics]\naws_access_key_id = {s3_bucket.key}\naws_secret_access_key = {s3_bucket.secret}\n")
    (home / ".aws" / "config").write_text("[profile robotics]\nregion = us-east-1\n")
    url = f"{s3_bucket.url}/prof"

    def cli(store, cache, **extra) -> RemoteCli:
        c = RemoteCli(tmp_path, store, cache=cache)
        c.env = {k: v for k, v in c.env.items() if not k.startswith("AWS_")} | {
            "HOME": str(home), "AWS_ENDPOINT_URL": s3_bucket.endpoint_url, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws" / "credentials"),
            "AWS_CONFIG_FILE": str(home / ".aws" / "config"), **extra}
        return c

    failed = cli(url, "cache-none")("store", "init", check=False)  # no credentials anywhere
    assert failed.code == 8, failed
    assert_one_error_line(failed.err, url, "config")

    by_env = cli(url, "cache-env", AWS_PROFILE="robotics")
    by_env.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=9, files=5, max_size=5000)
    assert by_env("dataset", "upload", "p", str(src), "--json").json()["version"] == 1

    by_option = cli(None, "cache-option")
    by_option("store", "add", "prof", url, "--option", "profile=robotics")
    by_option.store = "prof"
    by_option("dataset", "download", "p", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out", mtimes=False) == snapshot(src, mtimes=False)


def test_abfs_and_az_urls_name_the_same_store(azure_container, tmp_path):
    prefix = f"{azure_container.name}/same-{uuid.uuid4().hex[:6]}"
    abfs = RemoteCli(tmp_path, None, azure_container.env)  # `osmo store init URL`, no --store
    assert abfs("store", "init", f"abfs://{prefix}", *TINY, "--json").json()["store"] == f"abfs://{prefix}"
    abfs.store = f"abfs://{prefix}"
    src = tmp_path / "src"
    random_tree(src, seed=12, files=8, max_size=5000)
    assert abfs("dataset", "upload", "both", str(src), "--json").json()["version"] == 1
    az = RemoteCli(tmp_path, f"az://{prefix}", azure_container.env, cache="cache-az")
    az("dataset", "download", "both", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out", mtimes=False) == snapshot(src, mtimes=False)


def test_store_options_naming_an_account_win_over_the_environment(azure_container, monkeypatch):
    """adlfs itself would take AZURE_STORAGE_CONNECTION_STRING (here: Azurite's) over the account
    the store's options name; the options must win, and the environment must be left as it was."""
    from osmo_store.blob.azure import open_azure

    env = azure_container.env["AZURE_STORAGE_CONNECTION_STRING"]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", env)
    store = open_azure(f"az://{azure_container.name}/x", {"account_name": "myacct", "account_key": "a2V5"})
    try:
        assert store.fs.connection_string is None
        assert store.fs.account_name == "myacct"
        assert store.fs.account_url == "https://myacct.blob.core.windows.net"
    finally:
        store.close()
    assert __import__("os").environ["AZURE_STORAGE_CONNECTION_STRING"] == env
    from_env = open_azure(f"az://{azure_container.name}/x", {})  # no account named: the environment
    try:
        assert from_env.fs.connection_string == env
    finally:
        from_env.close()


def test_a_password_in_a_store_url_is_never_printed(tmp_path, monkeypatch):
    """Generic fsspec URLs may carry ``user:password@``: errors and ``store list`` show ***."""
    from osmo_store.blob.urls import without_password
    from osmo_store.userconfig import UserConfig

    assert without_password("sftp://ann:s3cr3t@host:22/data") == "sftp://ann:***@host:22/data"
    assert without_password("sftp://ann@host/data") == "sftp://ann@host/data"
    assert without_password("s3://bucket/p") == "s3://bucket/p"
    cli = RemoteCli(tmp_path, None, {"OSMO_STORE": "ftp://ann:s3cr3t@127.0.0.1:9/p"})
    failed = cli("dataset", "list", check=False)
    del cli.env["OSMO_STORE"]
    assert failed.code != 0 and "ann:***@127.0.0.1:9" in failed.err and "s3cr3t" not in failed.out + failed.err
    monkeypatch.setenv("OSMO_CONFIG", cli.env["OSMO_CONFIG"])
    config = UserConfig.load()
    config.add("ftp", "ftp://ann:s3cr3t@127.0.0.1:9/p", {})
    config.save()
    printed = [cli("store", "list"), cli("store", "list", "--json")]
    assert all("s3cr3t" not in r.out + r.err and "ann:***@" in r.out for r in printed)
