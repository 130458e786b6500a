"""``osmo workflow port-forward``'s forwarder, the same for both runners (docs/INTERACTIVE.md).

``parse_ports`` reads the port arguments: ``PORT``, ``PORT:LOCAL``, ranges ``A-B`` and ``A-B:C-D`` (the
same length), each with an optional ``/tcp``, ``/udp`` or ``/both`` (without one: the command's default
protocol); ``LOCAL`` 0 takes any free port. ``Forwarder`` binds every local port first (a port in use
fails the whole call, naming it, before anything is forwarded), then forwards until stopped:

- TCP: every accepted connection asks the ``Connector`` for a connection to the task's port and the
  bytes are copied both ways (a half-close is passed on);
- UDP: each client address gets a socket of its own from the ``Connector`` (replies go back to that
  client); a client silent for ``UDP_IDLE`` seconds is forgotten.

The ``Connector`` finds the task anew for every connection, so forwarding goes on across a restart of
the task (a RESCHEDULE); a connection that cannot be made is closed and reported on the log (``nothing
listens on port N``), and forwarding goes on. When the task has ended for good (``Connector.check``,
every ``CHECK_EVERY`` seconds, or a connection) the connector raises ``TargetGone`` and the forwarder
stops with it.
"""

from __future__ import annotations

import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from osmo_run.local.errors import CONFLICT, USAGE, RunnerError

PROTOCOLS = ("tcp", "udp")
MAX_PORTS = 1000
UDP_IDLE = 120.0
CHECK_EVERY = 2.0
BUFFER = 65536
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?::(\d+)(?:-(\d+))?)?(?:/(tcp|udp|both))?$")


class TargetGone(RunnerError):
    """The task ended for good: nothing more to forward to."""

    def __init__(self, message: str, **subject: object) -> None:
        super().__init__(message, CONFLICT, **subject)


class Connector(Protocol):
    def tcp(self, port: int) -> socket.socket:
        """A stream socket connected to the task's ``port``; ``RunnerError`` when it cannot be made."""

    def udp(self, port: int) -> socket.socket:
        """A datagram socket connected to the task's ``port``; ``RunnerError`` when it cannot be made."""

    def check(self) -> None:
        """Raise ``TargetGone`` once the task has ended for good (called every ``CHECK_EVERY`` seconds)."""


@dataclass(frozen=True)
class PortRule:
    remote: int
    local: int
    protocol: str  # "tcp" or "udp"

    def describe(self, address: str, local: int) -> str:
        return f"{address}:{local} -> port {self.remote}/{self.protocol}"


def _port(text: str | None, item: str, zero: bool = False) -> int | None:
    if text is None:
        return None
    value = int(text)
    if not (0 if zero else 1) <= value <= 65535:
        raise RunnerError(f"port {value} in {item!r} is out of range (1-65535)", USAGE)
    return value


def parse_ports(items: list[str], default: str = "tcp") -> list[PortRule]:
    """The rules of the port arguments (see the module docstring); ``RunnerError`` (usage) naming a bad one."""
    rules: list[PortRule] = []
    for item in items:
        match = _PORT.match(item.strip())
        if not match:
            raise RunnerError(f"bad port {item!r}: expected PORT, PORT:LOCAL, A-B or A-B:C-D, optionally "
                              "followed by /tcp, /udp or /both", USAGE)
        first, last = _port(match[1], item), _port(match[2], item)
        local_first, local_last = _port(match[3], item, zero=True), _port(match[4], item, zero=True)
        last = last if last is not None else first
        if last < first:
            raise RunnerError(f"bad port range {item!r}: it ends before it starts", USAGE)
        remotes = list(range(first, last + 1))
        if local_first is None:
            locals_ = remotes
        elif local_last is None:
            if len(remotes) > 1 and local_first != 0:
                raise RunnerError(f"bad port {item!r}: a range needs a local range of the same length", USAGE)
            locals_ = [local_first] * len(remotes)
        else:
            locals_ = list(range(local_first, local_last + 1))
            if len(locals_) != len(remotes):
                raise RunnerError(f"bad port {item!r}: the local range has {len(locals_)} ports, the task's "
                                  f"{len(remotes)}", USAGE)
        protocols = PROTOCOLS if match[5] == "both" else (match[5] or default,)
        rules += [PortRule(r, loc, p) for r, loc in zip(remotes, locals_) for p in protocols]
    if len(rules) > MAX_PORTS:
        raise RunnerError(f"{len(rules)} ports to forward: at most {MAX_PORTS} in one call", USAGE)
    seen: set[tuple[int, str]] = set()
    for rule in rules:
        if rule.local and (rule.local, rule.protocol) in seen:
            raise RunnerError(f"local port {rule.local}/{rule.protocol} is given twice", USAGE)
        seen.add((rule.local, rule.protocol))
    return rules


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until end of file, then half-close ``target``; ends quietly when either side fails."""
    try:
        while data := source.recv(BUFFER):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _join(client: socket.socket, task: socket.socket) -> None:
    other = threading.Thread(target=_pump, args=(task, client), daemon=True)
    other.start()
    _pump(client, task)
    other.join()
    client.close()
    task.close()


class Forwarder:
    """Binds ``rules`` on ``address`` and forwards to ``connector`` (see the module docstring)."""

    def __init__(self, rules: list[PortRule], connector: Connector, address: str = "127.0.0.1",
                 log: Callable[[str], None] = print) -> None:
        self.rules, self.connector, self.address, self.log = rules, connector, address, log
        self.bound: list[tuple[PortRule, socket.socket]] = []
        self.stopping = threading.Event()
        self.gone: TargetGone | None = None

    def bind(self) -> list[tuple[PortRule, int]]:
        """Bind every local port; returns each rule with the port it got. A port that cannot be bound
        closes the others and raises ``RunnerError`` naming it."""
        try:
            infos = socket.getaddrinfo(self.address, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise RunnerError(f"--address {self.address}: {exc.strerror}", USAGE) from None
        family = infos[0][0]
        for rule in self.rules:
            sock = socket.socket(family, socket.SOCK_STREAM if rule.protocol == "tcp" else socket.SOCK_DGRAM)
            try:
                if rule.protocol == "tcp":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.address, rule.local))
                if rule.protocol == "tcp":
                    sock.listen(64)
            except OSError as exc:
                sock.close()
                self.close()
                raise RunnerError(f"cannot listen on {self.address}:{rule.local}/{rule.protocol}: "
                                  f"{exc.strerror or exc}", CONFLICT) from None
            self.bound.append((rule, sock))
        return [(rule, sock.getsockname()[1]) for rule, sock in self.bound]

    def close(self) -> None:
        for _, sock in self.bound:
            sock.close()
        self.bound = []

    def stop(self) -> None:
        self.stopping.set()

    def serve(self) -> None:
        """Forward until ``stop`` (or the task is gone: ``TargetGone`` is raised)."""
        for rule, sock in self.bound:
            if rule.protocol == "udp":
                threading.Thread(target=self._udp, args=(rule, sock), daemon=True).start()
        with selectors.DefaultSelector() as selector:
            for rule, sock in self.bound:
                if rule.protocol == "tcp":
                    selector.register(sock, selectors.EVENT_READ, rule)
            checked = time.monotonic()
            while not self.stopping.is_set():
                if time.monotonic() - checked >= CHECK_EVERY:
                    checked = time.monotonic()
                    self._check()
                for key, _ in selector.select(timeout=0.2):
                    try:
                        client, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    threading.Thread(target=self._tcp, args=(key.data, client), daemon=True).start()
        self.close()
        if self.gone is not None:
            raise self.gone

    def _check(self) -> None:
        try:
            self.connector.check()
        except TargetGone as exc:
            self.gone = exc
            self.stopping.set()
        except RunnerError:
            pass  # e.g. the state cannot be read just now: the next check will tell

    def _connect(self, rule: PortRule) -> socket.socket | None:
        try:
            return self.connector.tcp(rule.remote) if rule.protocol == "tcp" else self.connector.udp(rule.remote)
        except TargetGone as exc:
            self.gone = exc
            self.stopping.set()
        except RunnerError as exc:
            self.log(f"port {rule.remote}/{rule.protocol}: {exc}")
        return None

    def _tcp(self, rule: PortRule, client: socket.socket) -> None:
        task = self._connect(rule)
        if task is None:
            client.close()
            return
        _join(client, task)

    def _udp(self, rule: PortRule, local: socket.socket) -> None:
        sessions: dict[tuple, tuple[socket.socket, list[float]]] = {}
        lock = threading.Lock()

        def replies(peer: tuple, task: socket.socket, last: list[float]) -> None:
            task.settimeout(1.0)
            while not self.stopping.is_set() and time.monotonic() - last[0] < UDP_IDLE:
                try:
                    data = task.recv(BUFFER)
                except socket.timeout:
                    continue
                except OSError:  # e.g. ECONNREFUSED: nothing listens on the task's port (yet)
                    continue
                last[0] = time.monotonic()
                try:
                    local.sendto(data, peer)
                except OSError:
                    break
            with lock:
                sessions.pop(peer, None)
            task.close()

        local.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                data, peer = local.recvfrom(BUFFER)
            except socket.timeout:
                continue
            except OSError:
                return
            with lock:
                session = sessions.get(peer)
            if session is None:
                task = self._connect(rule)
                if task is None:
                    continue
                session = (task, [time.monotonic()])
                with lock:
                    sessions[peer] = session
                threading.Thread(target=replies, args=(peer, *session), daemon=True).start()
            session[1][0] = time.monotonic()
            try:
                session[0].send(data)
            except OSError as exc:
                self.log(f"port {rule.remote}/udp: {exc.strerror or exc}")
