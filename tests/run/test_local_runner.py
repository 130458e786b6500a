"""The local runner's normal paths: task isolation (own /tmp, /osmo/data, hostname and address;
two tasks on one port), plain-process mode, tokens and dataset versions, the pool shared between
workflows, and the CLI around a running workflow (submit returns, list, logs --follow, spec, query)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import yaml

from .conftest import Osmo, groups_of, tasks_of, write_spec


def test_isolated_tasks_get_their_own_view_and_address(tmp_path):
    osmo = Osmo(tmp_path / "osmo", OSMO_ISOLATION="namespaces")
    osmo.pool(grace_period="1s")
    tag = uuid.uuid4().hex[:8]
    script = f"""set -e
[ "$(hostname)" = "$ME" ] && echo "hostname ok: $ME"
mkdir -p /tmp/www && hostname > /tmp/www/name.txt && touch /tmp/private-{tag}
cd /tmp/www && python3 -m http.server 8000 >/dev/null 2>&1 &
until curl -sf http://$PEER:8000/name.txt > {{{{output}}}}/peer.txt; do sleep 0.2; done
cat /etc/osmo-test-{tag}.conf /tmp/conf-{tag}.txt > {{{{output}}}}/files.txt
ls /osmo/data > {{{{output}}}}/data-view.txt
getent hosts alpha beta > {{{{output}}}}/hosts.txt
echo "peer says $(cat {{{{output}}}}/peer.txt)"
"""

    def task(name: str, peer: str, tail: str) -> dict:
        return {"name": name, "image": "u", "command": ["bash", "/tmp/run.sh"],
                "environment": {"ME": name, "PEER": "{{host:%s}}" % peer},
                "files": [{"path": "/tmp/run.sh", "contents": script + tail},
                          {"path": f"/etc/osmo-test-{tag}.conf", "contents": f"etc file of {name}\n"},
                          {"path": f"/tmp/conf-{tag}.txt", "contents": f"tmp file of {name}\n"}]}

    lead = dict(task("alpha", "beta", "sleep 1\n"), lead=True)
    doc = {"workflow": {"name": "pods", "groups": [{"name": "pair", "tasks": [lead, task("beta", "alpha", "sleep 300\n")]}]}}
    spec = tmp_path / "pods.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    osmo.submit(spec, timeout=120)
    info = osmo.query("pods-1")
    assert info["status"] == "COMPLETED", osmo.logs("pods-1")
    assert info["isolation"].startswith("namespaces")
    tasks = tasks_of(info)
    hosts = {name: task["host"] for name, task in tasks.items()}
    assert hosts["alpha"] != hosts["beta"] and all(h.startswith("10.213.") for h in hosts.values())
    logs = osmo.logs("pods-1")
    assert "alpha | hostname ok: alpha" in logs and "beta | hostname ok: beta" in logs
    assert "alpha | peer says beta" in logs and "beta | peer says alpha" in logs  # both listened on :8000
    alpha_out = Path(tasks["alpha"]["attempts"][0]["run_dir"]) / "data" / "output"
    assert (alpha_out / "files.txt").read_text() == "etc file of alpha\ntmp file of alpha\n"
    assert (alpha_out / "data-view.txt").read_text().split() == ["output"]  # /osmo/data is the run dir's data
    assert (alpha_out / "hosts.txt").read_text().split() == [hosts["alpha"], "alpha", hosts["beta"], "beta"]
    # nothing reached the host's /etc or /tmp
    assert not Path(f"/etc/osmo-test-{tag}.conf").exists()
    assert not Path(f"/tmp/private-{tag}").exists() and not Path(f"/tmp/conf-{tag}.txt").exists()
    assert tasks["beta"]["reason"] == "stopped when the lead task 'alpha' ended"
    assert logs.count(f"network {hosts['alpha']}, private /tmp") == 1
    assert osmo.processes_left() == []


def test_plain_processes_share_the_host_and_say_so_once(tmp_path):
    osmo = Osmo(tmp_path / "osmo", OSMO_ISOLATION="none")
    osmo.pool(grace_period="1s", reschedule_limit=1, lead_head_start=0)
    tag = uuid.uuid4().hex[:8]
    counter = tmp_path / "tries"
    spec = write_spec(tmp_path, f"""
        workflow:
          name: plain
          groups:
          - name: pair
            tasks:
            - name: server
              lead: true
              image: u
              command: [sh, /tmp/osmo-{tag}/run.sh]
              files:
              - path: /tmp/osmo-{tag}/run.sh
                contents: |
                  echo "peer is {{{{host:client}}}}, helper at /tmp/osmo-{tag}/helper.sh"
                  . /tmp/osmo-{tag}/helper.sh
                  echo x >> {counter}
                  [ $(wc -l < {counter}) -ge 2 ] || exit 5
              - path: /tmp/osmo-{tag}/helper.sh
                contents: echo helper ran
              exitActions: {{RESCHEDULE: 5}}
            - {{name: client, image: u, command: [sh, -c, "echo server is {{{{host:server}}}}; sleep 300"]}}
        """)
    osmo.submit(spec)
    info = osmo.query("plain-1")
    assert info["status"] == "COMPLETED", osmo.logs("plain-1")
    assert info["isolation"] == ("plain host processes (isolation: none was asked for); images are not used "
                                 "(engine: none was asked for)")
    server_log = osmo.logs("plain-1", "server")
    assert server_log.count("tasks run as plain host processes") == 1  # two attempts, one notice
    assert "peer is 127.0.0.1" in server_log and "helper ran" in server_log
    assert "server is 127.0.0.1" in osmo.logs("plain-1", "client")
    run_dir = tasks_of(info)["server"]["attempts"][0]["run_dir"]
    assert f"files: /tmp/osmo-{tag}/run.sh is written as {run_dir}/files/tmp/osmo-{tag}/run.sh" in server_log
    assert not Path(f"/tmp/osmo-{tag}").exists()  # the host's /tmp was not written
    assert [a["status"] for a in tasks_of(info)["server"]["attempts"]] == ["RESCHEDULED", "COMPLETED"]


def test_tokens_inputs_and_dataset_versions(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: tokens
          tasks:
          - name: producer
            image: u
            command: [sh, -c, "mkdir -p {{output}}/d && echo 'made by {{workflow_id}}' > {{output}}/d/data.txt"]
            outputs:
            - dataset: {name: results, path: d, metadata: ["stage=produce"]}
          - name: consumer
            image: u
            command: [sh, -c]
            args: ["cat {{input:producer}}/d/data.txt {{input:0}}/d/data.txt; echo '{{input:0}}' "]
            inputs:
            - task: producer
        """)
    osmo.submit(spec)
    info = osmo.query("tokens-1")
    assert info["status"] == "COMPLETED", osmo.logs("tokens-1")
    tasks = tasks_of(info)
    written = {d["dataset"]: d["version"] for d in tasks["producer"]["datasets_written"]}
    assert written == {"tokens-1--producer": 1, "results": 1}
    read = tasks["consumer"]["datasets_read"]
    assert [(d["dataset"], d["version"], d["ref"]) for d in read] == [("tokens-1--producer", 1, "tokens-1--producer:1")]
    log = osmo.logs("tokens-1", "consumer")
    assert log.count("made by tokens-1") == 2
    assert "/osmo/data/input/0" in log
    listed = osmo("dataset", "list", "--json", group="").json()
    names = {d["name"] for d in (listed["datasets"] if isinstance(listed, dict) else listed)}
    assert {"results", "tokens-1--producer", "tokens-1--consumer"} <= names


def test_submit_returns_and_the_workflow_runs_on(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: {{ name }}
          tasks:
          - name: ticker
            image: u
            command: [sh, -c, "for i in 1 2 3 4 5; do echo tick $i; sleep 0.5; done"]
        default-values:
          name: default-name
        """)
    submit = [sys.executable, "-m", "osmo_store.cli.main", "workflow", "submit", str(spec), "--set", "name=ticks"]
    # the submitting shell is killed, with its whole process group, right after submit returns
    shell = subprocess.run(["bash", "-c", f"{' '.join(submit)}; kill -KILL 0"], env=osmo.env,
                           capture_output=True, text=True, timeout=60, start_new_session=True)
    assert shell.returncode == -9 and shell.stdout.strip() == "ticks-1"
    listed = osmo("list").out
    assert "ticks-1" in listed and ("RUNNING" in listed or "PENDING" in listed)
    followed = osmo("logs", "ticks-1", "--follow", timeout=60).out
    assert [line for line in followed.splitlines() if "tick" in line and "[osmo" not in line] == \
        [f"ticker | tick {i}" for i in range(1, 6)]
    info = osmo.query("ticks-1")
    assert info["status"] == "COMPLETED"
    assert "  name: ticks\n" in osmo("spec", "ticks-1").out
    text = osmo("query", "ticks-1").out
    assert text.startswith("Workflow ticks-1: COMPLETED (exit code 0)")
    assert "ticker-group" in text and "  ticker *" in text and "written: ticks-1--ticker:1" in text
    assert osmo("list", "--json").json()[0]["status"] == "COMPLETED"


def test_the_pool_is_shared_by_workflows(osmo, tmp_path):
    osmo.pool(capacity={"cpu": 1}, grace_period="1s")
    spec = write_spec(tmp_path, """
        workflow:
          name: hog
          resources:
            default: {cpu: 1}
          tasks:
          - {name: work, image: u, command: [sleep, "3"]}
        """)
    first = osmo.submit(spec, wait=False)
    second = osmo.submit(spec, wait=False)  # submit checks the store first: a fraction of a second
    a, b = osmo.wait(first), osmo.wait(second)
    assert a["status"] == b["status"] == "COMPLETED"
    ga, gb = groups_of(a)["work-group"], groups_of(b)["work-group"]
    one, two = sorted([ga, gb], key=lambda g: g["started"])
    assert two["started"] >= one["ended"]  # never both admitted at once
    waited = datetime.fromisoformat(two["started"][:-1]) - datetime.fromisoformat(two["scheduled"][:-1])
    assert waited.total_seconds() > 1.5  # it stayed SCHEDULING while the other held the pool


def test_submit_wait_json_and_exit_code(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: quick
          tasks:
          - {name: only, image: u, command: [sh, -c, "echo out; echo err >&2; exit 4"]}
        """)
    result = osmo("submit", spec, "--wait", "--json", check=False)
    assert result.code == 1
    info = result.json()
    assert info["id"] == "quick-1" and info["status"] == "FAILED" and info["exit_code"] == 4
    log = osmo.logs("quick-1", "only")
    assert "out\n" in log and "err\n" in log
    assert Path(info["groups"][0]["tasks"][0]["log"]).read_text() == log
    assert os.path.isdir(info["workflow_dir"])


def test_store_option_and_files_in_the_output(any_osmo, tmp_path):
    store = tmp_path / "team-store"
    any_osmo("--store", str(store), "store", "init", group="")
    spec = write_spec(tmp_path, """
        workflow:
          name: notes
          tasks:
          - name: scribe
            image: u
            command: [sh, -c, "cat {{output}}/notes.txt"]
            files:
            - {path: /osmo/data/output/notes.txt, contents: "written by files\\n"}
        """)
    any_osmo.submit(spec, "--store", str(store))
    info = any_osmo.query("notes-1")
    assert info["status"] == "COMPLETED", any_osmo.logs("notes-1")
    assert info["store"] == str(store)
    assert "written by files" in any_osmo.logs("notes-1")
    written = tasks_of(info)["scribe"]["datasets_written"]
    assert [(d["dataset"], d["version"], d["files"]) for d in written] == [("notes-1--scribe", 1, 1)]
    listed = any_osmo("--store", str(store), "dataset", "list", "--json", group="").json()
    names = {d["name"] for d in (listed["datasets"] if isinstance(listed, dict) else listed)}
    assert names == {"notes-1--scribe"}
    assert not (tmp_path / "osmo" / "store").exists()  # $OSMO_STORE was not used
