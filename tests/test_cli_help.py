"""A CLI that helps, run as a user runs it (a subprocess per command): errors a script can read with
``--json``, the closest names for a mistyped dataset or tag, deleting a tagged version names the
tags that went with it, and counts with the right plural."""

from __future__ import annotations

import pytest

from conftest import Cli
from helpers.json_errors import json_error
from helpers.trees import random_tree, write_file
from test_cli_e2e import assert_error


def three_datasets(cli: Cli) -> Cli:
    random_tree(cli.root / "src", seed=3, files=3, max_size=3000)
    cli("dataset", "upload", "lidar-front", str(cli.root / "src"))
    cli("dataset", "upload", "lidar-rear", str(cli.root / "src"))
    cli("dataset", "upload", "camera:golden", str(cli.root / "src"))
    return cli


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Cli:
    """Three datasets the error tests only read (none of their commands succeeds in changing them)."""
    return three_datasets(Cli.tiny(tmp_path_factory, "help"))


@pytest.fixture
def own_store(cli) -> Cli:
    """Three datasets a test may change."""
    cli.init_tiny()
    return three_datasets(cli)


@pytest.mark.parametrize("args, exit_code, code, named, needle", [
    (("dataset", "info", "lidar-frnt"), 3, "not_found",
     {"dataset": "lidar-frnt", "suggestions": ["lidar-front", "lidar-rear"]}, "did you mean 'lidar-front' or"),
    (("dataset", "download", "camera:goldn", "{out}"), 3, "not_found",
     {"dataset": "camera", "tag": "goldn", "suggestions": ["golden"]}, "did you mean 'golden'"),
    (("dataset", "download", "camera:9", "{out}"), 3, "not_found", {"dataset": "camera", "version": 9}, "no version 9"),
    (("dataset", "tag", "camera:1", "--delete", "gloden"), 3, "not_found",
     {"dataset": "camera", "tag": "gloden", "suggestions": ["golden"]}, "did you mean 'golden'"),
    (("dataset", "upload", "ds", "{out}/missing"), 2, "usage", {}, "missing"),
    (("dataset", "upload", "--workers", "0", "ds", "{out}"), 2, "usage", {"option": "--workers"}, "--workers"),
    (("dataset", "delete", "camera"), 2, "usage", {"dataset": "camera"}, "say which version"),
    (("dataset", "delete", "camera:1", "--keep-tags"), 2, "usage", {"option": "--keep-tags"}, "not supported"),
    (("store", "gc", "--min-age", "soon"), 2, "usage", {}, "--min-age"),
    (("dataset", "no-such-command"), 2, "usage", {}, "No such command"),
])
def test_errors_with_json_are_one_json_object(store, tmp_path, args, exit_code, code, named, needle):
    argv = [a.format(out=tmp_path / "out") for a in args]
    error = json_error(store(*argv, "--json", check=False), exit_code, code, **named)
    assert needle in error["error"]
    # without --json: the same message as one plain line, the same exit code
    assert_error(store(*argv, check=False), exit_code, error["error"])


def test_a_usage_error_before_the_command_is_json_too(store):
    json_error(store("--bogus", "dataset", "list", "--json", check=False), 2, "usage")
    json_error(store("dataset", "list", "--json", "--bogus", check=False), 2, "usage")
    # --json given after "--" is an argument (a dataset name here), not the option: a plain line
    assert_error(store("dataset", "info", "--", "--json", check=False), 3, "'--json'")


def test_names_far_from_any_get_no_suggestion(store):
    error = json_error(store("dataset", "info", "zzzz", "--json", check=False), 3, "not_found", dataset="zzzz")
    assert "suggestions" not in error and "did you mean" not in error["error"]


def test_deleting_tagged_versions_names_the_tags_and_keep_tags_is_refused(own_store):
    store = own_store
    store("dataset", "tag", "camera:1", "--set", "prod")
    assert_error(store("dataset", "delete", "camera:golden", "--keep-tags", check=False), 2, "--keep-tags",
                 "osmo dataset tag NAME:OTHER --set TAG")
    assert store("dataset", "info", "camera", "--json").json()["tags"] == {"golden": 1, "prod": 1}  # untouched
    out = store("dataset", "delete", "camera:golden").out
    assert out.strip() == "deleted camera:1; 2 tags went with it: golden, prod"
    assert store("dataset", "info", "camera", "--json").json()["tags"] == {}
    store("dataset", "upload", "camera:again", str(store.root / "src"))
    done = store("dataset", "delete", "camera", "--all", "--json").json()
    assert done == {"dataset": "camera", "deleted_versions": 1, "all": True, "tags_removed": ["again"]}
    assert "--keep-tags" in store("dataset", "delete", "--help").out  # the help says it is refused, and why


def test_counts_are_singular_and_plural_as_they_should_be(cli, tmp_path):
    cli.init_tiny()
    write_file(tmp_path / "one" / "only.txt", b"one file\n")
    up = cli("dataset", "upload", "single", str(tmp_path / "one")).out
    assert " 1 file, " in up and "1 files" not in up
    down = cli("dataset", "download", "single", str(tmp_path / "back")).out
    assert " 1 file, " in down
    assert " 1 file, " in cli("dataset", "checksum", str(tmp_path / "one")).out
    verify = cli("store", "verify").out
    assert "1 live version: 1 chunk and 1 manifest node; 1 pack" in verify and "1 event" in verify
    gc = cli("store", "gc", "--dry-run").out
    assert "live: 1 version, 1 chunk and 1 manifest node" in gc and "stored: " in gc and " in 1 pack:" in gc
    assert "1 pack," in cli("store", "report").out.replace("1 pack for", "1 pack,")
    deleted = cli("dataset", "delete", "single", "--all").out
    assert deleted.strip() == "deleted dataset single (1 version)"
    write_file(tmp_path / "filtered" / "a.txt", b"a")
    assert_error(cli("dataset", "upload", "ds", str(tmp_path / "filtered"), "--exclude", "*.txt", check=False), 2,
                 "1 file excluded by --include/--exclude")
