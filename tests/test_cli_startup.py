"""Commands start with only what they use: every ``osmo`` command is a new Python process (scripts run
thousands of them; the test suite does), and importing the rest of the product costs each one a tenth of a
second or more. Each case runs a command in a subprocess as ``osmo`` would, then lists the modules that
process loaded, and checks the heavy ones it has no use for are not among them (rich draws tables, trees
and bars; yaml reads config files; Jinja renders templates; the store's single-operation engines; the
interactive commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import Cli

# Runs the CLI in this process, then prints the modules it loaded (whatever the exit code was).
PROBE = """
import json, runpy, sys
sys.argv = ["osmo", *json.loads(sys.argv[1])]
try:
    runpy.run_module("osmo_store.cli.main", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

STORE_ENGINES = ("osmo_store.transfer.upload", "osmo_store.repair", "osmo_store.maintenance",
                 "osmo_store.retention", "osmo_store.report.html", "osmo_store.report.prices")
NOT_FOR_READING = ("rich", "yaml", "jinja2", "osmo_run", *STORE_ENGINES)


def loaded(env: dict, *args: str, succeeds: bool = True) -> set[str]:
    """The modules ``osmo ARGS`` loaded (it must succeed unless ``succeeds`` is False)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=60)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["exit"] in (0, None) or not succeeds, proc.stdout + proc.stderr
    return set(result["modules"])


def runtime_env(tmp_path) -> dict:
    """Private workflow state, store and configs (none of them exists yet)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMO_")}
    env.update(OSMO_STATE_DIR=str(tmp_path / "state"), OSMO_STORE=str(tmp_path / "store"),
               OSMO_CACHE_DIR=str(tmp_path / "cache"), OSMO_CONFIG=str(tmp_path / "config.yaml"),
               OSMO_POOL_CONFIG=str(tmp_path / "pool.yaml"))
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Cli:
    cli = Cli.tiny(tmp_path_factory, "startup")
    (cli.root / "src").mkdir()
    (cli.root / "src" / "a.txt").write_text("a\n")
    cli("dataset", "upload", "ds", str(cli.root / "src"))
    return cli


def _present(modules: set[str], names) -> list[str]:
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))


@pytest.mark.parametrize("args, also_loads", [
    (("dataset", "list", "--json"), ("osmo_store.usage",)),
    (("dataset", "info", "ds", "--json"), ("osmo_store.usage",)),
    (("dataset", "inspect", "ds", "--json"), ()),
    (("dataset", "download", "ds", "{out}", "--json"), ("osmo_store.transfer.download",)),
], ids=["list", "info", "inspect", "download"])
def test_reading_a_store_loads_no_drawing_config_template_or_other_engine(store, tmp_path, args, also_loads):
    modules = loaded(store.env, "--store", store.store, *(a.replace("{out}", str(tmp_path / "out")) for a in args))
    assert _present(modules, NOT_FOR_READING) == []
    assert _present(modules, also_loads) == list(also_loads)  # the probe sees what a command does load


def test_a_table_loads_rich_and_an_upload_its_engine(store, tmp_path):
    assert "rich" in loaded(store.env, "--store", store.store, "dataset", "list")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.txt").write_text("b\n")
    modules = loaded(store.env, "--store", store.store, "dataset", "upload", "other", str(tmp_path / "more"), "--json")
    assert "osmo_store.transfer.upload" in modules and _present(modules, ("rich", "jinja2", "osmo_run")) == []


@pytest.mark.parametrize("args", [("workflow", "list", "--json"), ("workflow", "query", "nothing-1", "--json")],
                         ids=["list", "query"])
def test_reading_workflows_loads_neither_jinja_nor_the_interactive_commands_nor_the_store(tmp_path, args):
    modules = loaded(runtime_env(tmp_path), *args, succeeds=False)  # query of an unknown workflow exits 3
    assert "osmo_run.local.service" in modules
    assert _present(modules, ("jinja2", "rich", "osmo_run.interactive_cli", "osmo_run.rsync_cli",
                              "osmo_run.local.launcher", "osmo_store.repository")) == []


def test_the_interactive_commands_are_still_listed_and_run(tmp_path):
    env = runtime_env(tmp_path)
    listing = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", "workflow", "--help"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0
    for name in ("exec", "port-forward", "rsync"):
        assert f"\n  {name} " in listing.stdout, listing.stdout
    assert "osmo_run.interactive_cli" in loaded(env, "workflow", "exec", "--help")
