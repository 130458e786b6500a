"""``osmo workflow port-forward``'s port arguments (osmo_run/portforward.py ``parse_ports``): single ports,
PORT:LOCAL, ranges with and without a local range, protocol suffixes, and one-line errors naming the bad one."""

from __future__ import annotations

import pytest

from osmo_run.local.errors import RunnerError
from osmo_run.portforward import MAX_PORTS, PortRule, parse_ports


def test_ports_ranges_and_protocols():
    assert parse_ports(["8888"]) == [PortRule(8888, 8888, "tcp")]
    assert parse_ports(["8888:9999", "53/udp"]) == [PortRule(8888, 9999, "tcp"), PortRule(53, 53, "udp")]
    assert parse_ports(["7000-7002:8000-8002"]) == [PortRule(7000 + i, 8000 + i, "tcp") for i in range(3)]
    assert parse_ports(["7000-7001:0"]) == [PortRule(7000, 0, "tcp"), PortRule(7001, 0, "tcp")]
    assert parse_ports(["5000/both"]) == [PortRule(5000, 5000, "tcp"), PortRule(5000, 5000, "udp")]
    assert parse_ports(["5000", "6000/tcp"], default="udp") == [PortRule(5000, 5000, "udp"), PortRule(6000, 6000, "tcp")]


@pytest.mark.parametrize("item, message", [
    ("http", "bad port 'http'"),
    ("0", "port 0 in '0' is out of range"),
    ("70000", "port 70000 in '70000' is out of range"),
    ("80-70", "bad port range '80-70': it ends before it starts"),
    ("80-82:90", "a range needs a local range of the same length"),
    ("80-82:90-91", "the local range has 2 ports, the task's 3"),
    ("80/sctp", "bad port '80/sctp'"),
])
def test_bad_ports_name_the_argument(item, message):
    with pytest.raises(RunnerError, match=message.replace("(", r"\(")) as caught:
        parse_ports([item])
    assert caught.value.exit_code == 2


def test_limits_and_duplicates():
    with pytest.raises(RunnerError, match="at most"):
        parse_ports([f"1-{MAX_PORTS + 1}"])
    with pytest.raises(RunnerError, match="local port 9000/tcp is given twice"):
        parse_ports(["80:9000", "81:9000"])
    assert len(parse_ports(["80:9000/udp", "81:9000"])) == 2  # different protocols may share a port
