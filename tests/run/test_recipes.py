"""The interactive recipes of examples/ run end to end on the local runner (namespaces mode), as
docs/INTERACTIVE.md tells a user to: SSH into a task with a key made for it, through port-forward (the
route VS Code's Remote-SSH takes), and a Jupyter server in a task whose notebook cell is executed over
its HTTP and websocket API through port-forward.

The host-process runner runs each recipe with this machine's tools (sshd from openssh-server; the
Jupyter server and kernel of this test environment, given to the recipe's ``jupyter`` value)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from helpers.tools import require_tool

from .conftest import require_namespace_tools
from .test_interactive import Forward

pytestmark = pytest.mark.xdist_group("interactive")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Served:
    """What ``Forward`` needs: the runner and the workflow."""

    def __init__(self, osmo, workflow_id: str) -> None:
        self.osmo, self.id = osmo, workflow_id

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "osmo_store.cli.main", "workflow", *args]


def test_ssh_recipe_logs_in_with_the_recipes_key_through_port_forward(osmo, tmp_path):
    require_namespace_tools()
    for tool in ("sshd", "ssh", "ssh-keygen"):
        require_tool(tool)
    key = tmp_path / "osmo_task"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    workflow_id = osmo.submit(EXAMPLES / "ssh.yaml", "--set-string", f"public_key={key.with_suffix('.pub').read_text()}",
                              wait=False)
    forward = None
    try:
        osmo.wait_log(workflow_id, "Server listening on 127.0.0.1 port 2222", timeout=60)
        forward = Forward(_Served(osmo, workflow_id), "dev", "2222:0")
        port = forward.local[(2222, "tcp")]
        ssh = ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@127.0.0.1"]
        done = subprocess.run([*ssh, "hostname; ls /osmo; exit 3"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        assert done.stdout.split() == ["dev", "data", "work"]  # the task's hostname and view
        other = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        refused = subprocess.run([*ssh[:2], str(other), *ssh[3:], "true"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 255 and "Permission denied" in refused.stderr  # only the recipe's key
    finally:
        if forward:
            forward.stop()
        osmo("cancel", workflow_id, check=False)
    assert osmo.processes_left() == []


def _jupyter(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _execute(port: int, token: str, kernel: str, code: str) -> str:
    """Run ``code`` in the kernel over the Jupyter websocket protocol; its stdout."""
    import websocket  # websocket-client (a dependency of the kubernetes client)

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel}/channels?token={token}", timeout=60)
    try:
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out = ""
        while True:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out += msg["content"]["text"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
    finally:
        ws.close()


def test_jupyter_recipe_runs_a_notebook_cell_through_port_forward(osmo, tmp_path):
    require_namespace_tools()
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        pytest.fail(f"{jupyter} is missing: install the test dependencies (pip install -e '.[test]')")
    if str(Path(sys.prefix).resolve()).startswith(("/tmp/", "/osmo/")):
        # a checkout under /tmp: a namespaces task sees its own /tmp, not this environment's Jupyter; the
        # recipe then runs as plain host processes (the SSH recipe covers namespaces mode)
        osmo.env["OSMO_ISOLATION"] = "none"
    token = secrets.token_hex(16)
    workflow_id = osmo.submit(EXAMPLES / "jupyter.yaml", "--set-string", f"token={token}",
                              "--set-string", f"jupyter={jupyter}", wait=False)
    forward = None
    try:
        osmo.wait_log(workflow_id, "is running at", timeout=120)
        forward = Forward(_Served(osmo, workflow_id), "notebook", "8888:0")
        port = forward.local[(8888, "tcp")]
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError):  # the token is asked for
            urllib.request.urlopen(f"{base}/api/kernels", timeout=30)
        kernel = _jupyter(f"{base}/api/kernels", token, "POST", {"name": "python3"})["id"]
        out = _execute(port, token, kernel, "import os, socket; print(6 * 7, socket.gethostname(), os.getcwd())")
        host = socket.gethostname() if osmo.env.get("OSMO_ISOLATION") == "none" else "notebook"
        assert out.split()[:2] == ["42", host], out  # the kernel runs in the task
        _jupyter(f"{base}/api/contents/hello.ipynb", token, "PUT", {"type": "notebook", "content": {
            "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
        info = osmo.query(workflow_id)
        run_dir = info["groups"][0]["tasks"][0]["attempts"][-1]["run_dir"]
        assert (Path(run_dir) / "data" / "output" / "hello.ipynb").is_file()  # saved in the output folder
    finally:
        if forward:
            forward.stop()
        osmo("cancel", workflow_id, check=False)
    assert osmo.processes_left() == []


def test_the_recipes_validate():
    for name in ("ssh.yaml", "jupyter.yaml"):
        done = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", "workflow", "validate", str(EXAMPLES / name)],
                              capture_output=True, text=True, env={**os.environ})
        assert done.returncode == 0, done.stderr
