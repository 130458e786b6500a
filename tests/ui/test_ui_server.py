"""``osmo ui``'s safety, without a browser: it binds 127.0.0.1 by default and answers only to loopback host
names; bound elsewhere it wants its token (URL once, then a cookie); state-changing requests need the
page's cross-site token and the UI's own origin; a port in use is a one-line error (exit 2); Ctrl-C
stops it promptly; the token never reaches its log."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers.tools import require_tool
from servers.osmo_ui import OsmoUiServer

CSRF_META = re.compile(r'<meta name="osmo-csrf" content="([^"]*)">')


def request(port: int, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None,
            host: str = "127.0.0.1") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.text = response.read().decode(errors="replace")
    conn.close()
    return response


def listening_address(port: int) -> list[str]:
    """The local addresses of the TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (``ip -4 -o addr``)."""
    out = subprocess.run([require_tool("ip"), "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return [m for m in re.findall(r"inet (\S+)/", out) if not m.startswith("127.")]


def csrf_of(port: int, headers: dict | None = None) -> str:
    page = request(port, "/workflows", headers=headers)
    assert page.status == 200, page.text
    found = CSRF_META.search(page.text)
    assert found and found.group(1), "no <meta name=osmo-csrf> with a value on /workflows"
    return found.group(1)


@pytest.fixture(scope="module")
def server(ui_osmo):
    with OsmoUiServer(ui_osmo.env) as ui:
        yield ui


def test_binds_loopback_by_default(server):
    assert server.info["host"] == "127.0.0.1" and server.info["loopback"] is True
    assert server.info["url"] == f"http://127.0.0.1:{server.port}/"
    assert listening_address(server.port) == ["127.0.0.1"]
    assert request(server.port, "/static/app.js").status == 200
    for address in non_loopback_addresses():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, server.port), timeout=5).close()


def test_foreign_host_name_is_refused(server):
    refused = request(server.port, "/workflows", headers={"Host": f"evil.example:{server.port}"})
    assert refused.status == 403 and "only to 127.0.0.1 and localhost" in refused.text
    assert request(server.port, "/workflows", headers={"Host": "evil.example"}).status == 403
    assert request(server.port, "/workflows", headers={"Host": f"localhost:{server.port}"}).status == 200


def test_posts_need_the_cross_site_token_and_the_own_origin(server):
    csrf = csrf_of(server.port)
    path = "/api/workflows/nosuch-1/cancel"
    json_type = {"Content-Type": "application/json"}
    no_header = request(server.port, path, "POST", json_type, b"{}")
    assert no_header.status == 403 and "cross-site token" in no_header.text
    wrong = request(server.port, path, "POST", {**json_type, "X-Osmo-CSRF": csrf[::-1]}, b"{}")
    assert wrong.status == 403
    other_origin = request(server.port, path, "POST",
                           {**json_type, "X-Osmo-CSRF": csrf, "Origin": "http://evil.example"}, b"{}")
    assert other_origin.status == 403
    form = request(server.port, path, "POST", {"Content-Type": "application/x-www-form-urlencoded",
                                               "X-Osmo-CSRF": csrf}, b"a=b")
    assert form.status == 403
    # the same request done right passes the guard: the route answers that the workflow does not exist
    own = request(server.port, path, "POST",
                  {**json_type, "X-Osmo-CSRF": csrf, "Origin": f"http://127.0.0.1:{server.port}"}, b"{}")
    assert own.status == 404, own.text
    assert "nosuch-1" in json.loads(own.text)["error"]


def test_other_address_needs_the_token_which_is_never_logged(ui_osmo):
    with OsmoUiServer(ui_osmo.env, ui_args=["--host", "0.0.0.0"]) as ui:
        assert ui.info["loopback"] is False
        token = parse_qs(urlsplit(ui.info["url"]).query)["token"][0]
        assert len(token) >= 20
        assert request(ui.port, "/workflows").status == 403
        assert request(ui.port, "/workflows?token=wrong-token").status == 403
        assert request(ui.port, "/workflows", headers={"Cookie": "osmo_ui_token=wrong"}).status == 403
        entry = request(ui.port, f"/workflows?token={token}")
        assert entry.status == 303 and entry.getheader("Location").endswith("/workflows")
        cookie = entry.getheader("Set-Cookie")
        assert cookie.startswith(f"osmo_ui_token={token};") and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        page = request(ui.port, "/workflows", headers={"Cookie": f"osmo_ui_token={token}"})
        assert page.status == 200 and "<table" in page.text
        # a token is no excuse for a POST without the cross-site token
        post = request(ui.port, "/api/workflows/nosuch-1/cancel", "POST",
                       {"Cookie": f"osmo_ui_token={token}", "Content-Type": "application/json"}, b"{}")
        assert post.status == 403
        time.sleep(0.2)  # let it flush what it logs about these requests
        logged = ui.stderr_text()
    assert token not in logged and token not in ui.stderr_text()


def test_port_in_use_is_one_line_and_exit_2(ui_osmo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", "ui", "--port", str(port)],
                              env=ui_osmo.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0], proc.stderr


def test_stop_leaves_no_process(ui_osmo):
    ui = OsmoUiServer(ui_osmo.env).start()
    pid, port = ui.proc.pid, ui.port
    assert request(port, "/static/app.js").status == 200
    ui.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert listening_address(port) == []
    ui.stop()  # idempotent


def test_ctrl_c_stops_it_promptly_without_a_traceback(ui_osmo):
    ui = OsmoUiServer(ui_osmo.env).start()
    try:
        proc = ui.proc
        assert request(ui.port, "/workflows").status == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        ui.stop()
    assert code == 0 and ui.stderr_log.strip().endswith("osmo ui: stopped"), ui.stderr_log
    assert took < 5, took
    assert "Traceback" not in ui.stderr_log, ui.stderr_log
    assert listening_address(ui.port) == []
