"""The test suite's setup: ``require_tool`` fails (never skips) naming the install command, the list
of outside programs matches the install scripts CI runs, README's test command is the one CI runs,
and no test skips itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools import INSTALL_TOOLS, TOOLS, find_tool, missing_message, require_tool

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PY = ROOT / "tests" / "helpers" / "tools.py"
CI_RUN = ROOT / ".ci" / "run"


@pytest.fixture
def empty_path(tmp_path, monkeypatch) -> Path:
    """PATH is one empty folder: only what this Python's bin/ holds (the virtualenv) can be found."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_a_missing_tool_fails_the_test_naming_the_command_that_installs_it(empty_path):
    with pytest.raises(pytest.fail.Exception) as failed:
        require_tool("nc")
    assert str(failed.value) == (
        "nc (Debian package netcat-openbsd) is not installed; the OSMO tutorial "
        "group_tasks_communication.yaml needs it. Install it with: bash .ci/install-tools.sh "
        "(bash .ci/run installs everything the tests need)")


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_message_is_one_line_with_an_install_command_that_exists(name):
    message = missing_message(name)
    assert "\n" not in message and message.startswith(f"{name} ")
    assert f"Install it with: {TOOLS[name].install}" in message
    script = re.match(r"bash (\.ci/\S+)", TOOLS[name].install)
    if script:
        assert (ROOT / script.group(1)).is_file(), TOOLS[name].install
    else:
        assert TOOLS[name].install.startswith("pip install -e '.[test]'")


def test_a_present_tool_is_found_on_path_and_in_the_virtualenv(empty_path):
    fake_nc = empty_path / "nc"
    fake_nc.write_text("#!/bin/sh\nexit 0\n")
    fake_nc.chmod(0o755)
    assert require_tool("nc") == str(fake_nc)
    # hadolint comes from the test extra's wheel into the virtualenv's bin/, found with PATH empty
    assert require_tool("hadolint") == os.path.join(os.path.dirname(sys.executable), "hadolint")


def test_an_unlisted_tool_is_a_programming_error():
    with pytest.raises(KeyError, match="tests/helpers/tools.py"):
        require_tool("no-such-tool")


def test_install_tools_gets_the_debian_packages_of_the_missing_tools(tmp_path):
    """What ``.ci/install-tools.sh`` installs: the packages of the absent tools, each once."""
    folder = tmp_path / "bin"
    folder.mkdir()
    apt_tools = [t for t in TOOLS.values() if t.debian_package]
    for tool in apt_tools:
        if tool.name not in ("nc", "unshare"):
            os.symlink("/bin/true", folder / tool.name)

    def packages(path: str) -> str:
        return subprocess.run([sys.executable, str(TOOLS_PY), "debian-packages"], env={"PATH": path},
                              capture_output=True, text=True, check=True).stdout.strip()

    assert packages(str(folder)) == "netcat-openbsd util-linux"
    assert packages(str(tmp_path / "absent")) == " ".join(sorted({t.debian_package for t in apt_tools}))
    os.symlink("/bin/true", folder / "nc")
    os.symlink("/bin/true", folder / "unshare")
    assert packages(str(folder)) == ""


def test_ci_runs_the_readme_test_command_after_every_install_script():
    ci_run = CI_RUN.read_text()
    readme = (ROOT / "README.md").read_text()
    command = re.search(r'^TEST_COMMAND="(.+)"$', ci_run, re.M).group(1)
    assert command in readme and "python -m pytest -q" in command
    assert re.search(r"```bash\nbash \.ci/run\n```", readme), "README's test command is not `bash .ci/run`"
    scripts = {m.group(1) for t in TOOLS.values() for m in [re.match(r"bash (\.ci/\S+)", t.install)] if m}
    assert INSTALL_TOOLS.split()[-1] in scripts
    for script in scripts | {".ci/install-services.sh"}:
        assert re.search(rf"^bash {re.escape(script)}$", ci_run, re.M), f".ci/run does not run {script}"


def test_the_servers_binaries_are_listed_with_their_install_script():
    from servers import kube, radosgw

    assert all(TOOLS[name].install == "bash .ci/install-radosgw.sh" for name in radosgw.BINARIES)
    assert TOOLS["etcd"].install == "bash .ci/install-kube.sh" and ".ci/install-kube.sh" in kube.INSTALL_HINT


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / ".ci").iterdir()))
def test_ci_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(ROOT / ".ci" / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_test_skips_itself():
    """A test that cannot run fails with the reason (require_tool for a missing program), never skips."""
    skipping = re.compile(r"pytest\.(skip\(|importorskip\(|mark\.skip)|\bskipif\b")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "tests").rglob("*.py"))
                 if path != Path(__file__).resolve()
                 for n, line in enumerate(path.read_text().splitlines(), 1) if skipping.search(line)]
    assert offenders == []


def test_find_tool_sees_what_the_tests_run():
    """On a machine set up by .ci/run every listed program is there (else: the command above installs it)."""
    missing = [missing_message(name) for name in TOOLS if find_tool(name) is None]
    assert missing == []
