"""A throwaway single-node Ceph cluster with radosgw on 127.0.0.1, for the heavier "real S3 server" tier.

The default S3 tier (moto) behaves like AWS. Ceph's radosgw is a real, widely deployed S3 server that
differs from AWS exactly where a content-addressed store is fragile: conditional writes (see
/work/shared/design/SERVICES.md, "S3: Ceph radosgw"). ``RadosgwServer`` builds a cluster in a temporary
directory (one mon, one memstore OSD, one radosgw, auth none, no mgr), runs every daemon as a child
process on free loopback ports, creates an S3 user with a fixed key, and removes everything on ``stop()``.

Needs the Debian packages installed by ``.ci/install-radosgw.sh``. Measured on 2 cores: ready in ~2 s
(1.9-4 s; 12 s with Ceph's default 1 s paxos propose interval), ~130 MiB RSS for the three daemons plus
whatever the memstore holds (objects live in the OSD's memory, capped at ``memstore_bytes``). The life cycle
is ``DaemonServer``'s (``base.py``): the daemons get PR_SET_PDEATHSIG, so they die with the thread that
started them even if the test process is SIGKILLed; the directory such a process leaves is removed by the
next ``start()``; ``stop()`` also runs at exit.

Manual use (foreground, Ctrl-C stops and cleans up)::

    python -m tests.servers.radosgw
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid

from .base import DaemonServer, die_with_parent, free_port

INSTALL_HINT = "install the Ceph packages with: sudo .ci/install-radosgw.sh"
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")
ACCESS_KEY = "OSMOTESTACCESSKEY000"
SECRET_KEY = "osmo-test-secret-key-0000000000000000000"
REGION = "us-east-1"
DIR_PREFIX = "osmo-radosgw-"


class RadosgwError(RuntimeError):
    """The cluster could not be built or did not come up; the message carries the daemon log tails."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not os.access(f"/usr/bin/{b}", os.X_OK)]


CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# Without these two, rgw retries its mon session forever with error -13 (auth none + msgr2 "secure").
ms mon client mode = crc
ms client mode = crc
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
log to stderr = false
err to stderr = false
mon cluster log file = {d}/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false

[mon]
# Default 1 s: each of the ~6 pools rgw creates at startup then costs a second or two.
paxos propose interval = 0.05
paxos min wait = 0.01
mon data = {d}/mon/$name
mon data avail crit = 1
mon data avail warn = 2

[osd]
# memstore: no disk, no block device (bluestore would need "bluestore block path" outside osd data: ELOOP).
osd data = {d}/osd/$name
osd objectstore = memstore
ms bind port min = {osd_port_min}
ms bind port max = {osd_port_max}
memstore device bytes = {memstore_bytes}
osd op num shards = 2
osd op num threads per shard = 1

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw thread pool size = 32
rgw enable usage log = false
rgw enable ops log = false
"""


class RadosgwServer(DaemonServer):
    """One mon + one memstore OSD + one radosgw, all children of this process, in a temporary directory.

    ``stop()`` stops them in reverse start order (rgw, osd, mon: ~0.5 s; rgw stalls if the mon goes first),
    SIGKILLing any that has not exited within 3 s, and removes the directory."""

    dir_prefix = DIR_PREFIX
    error = RadosgwError
    daemon_label = "ceph {name}"
    log_suffix = ".stdout"  # the daemons write their own log/<name>.log
    term_grace = 3.0
    poll_interval = 0.25

    def __init__(self, *, memstore_bytes: int = 2 << 30, start_timeout: float = 120.0) -> None:
        super().__init__()
        self.memstore_bytes = memstore_bytes
        self.start_timeout = start_timeout
        self.key = ACCESS_KEY
        self.secret = SECRET_KEY
        self.region = REGION
        self.conf = ""
        self.rgw_port = 0
        self.endpoint_url = ""

    # ----------------------------------------------------------------------------------------- lifecycle
    def _start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise RadosgwError(f"Ceph binaries not found: {', '.join(missing)}; {INSTALL_HINT}")
        self.make_dir()
        self._bootstrap()

    def rss_bytes(self) -> int:
        """Resident memory of all the daemons together (from /proc)."""
        return sum(self.rss_by_daemon().values())

    # ----------------------------------------------------------------------------------------- bootstrap
    def _bootstrap(self) -> None:
        d = self.dir
        for sub in ("run", "mon/mon.a", "osd/osd.0"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self.rgw_port = free_port()
        mon_port = free_port()
        osd_port_min = _free_port_range(8)
        fsid = str(uuid.uuid4())
        self.conf = os.path.join(d, "ceph.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(d=d, fsid=fsid, mon_port=mon_port, rgw_port=self.rgw_port,
                                osd_port_min=osd_port_min, osd_port_max=osd_port_min + 7,
                                memstore_bytes=self.memstore_bytes))
        open(os.path.join(d, "keyring"), "w").close()
        monmap = os.path.join(d, "monmap")
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", monmap)
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
        self.spawn("mon", self._cmd("ceph-mon", "-f", "-i", "a"))

        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "osd", "new", osd_uuid, timeout=60).strip()
        if osd_id != "0":
            raise RadosgwError(f"expected osd id 0, got {osd_id!r}")
        self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self.spawn("osd", self._cmd("ceph-osd", "-f", "-i", "0"))
        self.wait_until(self._osd_up, "osd.0 up")

        self.spawn("rgw", self._cmd("radosgw", "-f", "-n", "client.rgw"))
        self.endpoint_url = f"http://127.0.0.1:{self.rgw_port}"
        self.wait_until(self._s3_answers, f"radosgw answering on {self.endpoint_url}")
        self._run("radosgw-admin", "-n", "client.rgw", "user", "create", "--uid=osmo-test",
                  "--display-name=osmo test", f"--access-key={self.key}", f"--secret-key={self.secret}",
                  timeout=60)

    def _cmd(self, exe: str, *args: str) -> list[str]:
        return [exe, "-c", self.conf, *args]

    def _run(self, exe: str, *args: str, timeout: float = 60) -> str:
        argv = self._cmd(exe, *args) if exe != "monmaptool" else [exe, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise RadosgwError(f"{' '.join(argv)} timed out after {timeout} s\n{self.log_tails()}") from None
        if proc.returncode != 0:
            raise RadosgwError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                               f"{self.log_tails()}")
        return proc.stdout

    def _osd_up(self) -> bool:
        try:
            out = subprocess.run(self._cmd("ceph", "osd", "stat", "--connect-timeout", "5"),
                                 capture_output=True, text=True, timeout=15).stdout
        except subprocess.TimeoutExpired:
            return False
        return "1 up" in out

    def _s3_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=2) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
        except OSError:
            return False

    # ----------------------------------------------------------------------------------------- S3 helpers
    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Abort its uploads, delete its objects and the bucket (frees the memstore's memory)."""
        client = self.client()
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for up in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                client.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
        client.delete_bucket(Bucket=name)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint_url}


def _free_port_range(n: int) -> int:
    """A start port p such that p..p+n-1 are currently free on 127.0.0.1 (for the OSD's messengers)."""
    for _ in range(200):
        p = free_port()
        if p + n > 65535:
            continue
        socks = []
        try:
            for q in range(p, p + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RadosgwError("no free range of loopback ports for the OSD")


def main() -> None:
    server = RadosgwServer()

    def announce() -> None:
        print(f"radosgw ready in {server.start_seconds:.1f} s, daemons {server.pids()}, "
              f"RSS {server.rss_bytes() / 2**20:.0f} MiB, data in {server.dir}")
        for k, v in server.env().items():
            print(f"export {k}={v}")

    server.run_in_foreground(announce)


if __name__ == "__main__":
    main()
