"""The container images built without an engine (.ci/build-images.sh, docs/IMAGES.md): their archives carry
the tags the runners need, their contents run (in a chroot of the unpacked image, and in Podman), the
pause process behaves as a pod's sandbox, and the cache rebuilds exactly when what goes in changes.

The images come from ``image_archives()`` (tests/helpers/images.py), which runs the script once per session:
under a second when .ci/run has built them, a build otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from helpers.images import (BUILD_SCRIPT, IMAGE_NAMES, ROOT, ImageArchive, image_aliases, image_archives,
                            run_build_script)
from helpers.tools import require_tool
from osmo_run.spec.loader import load_file

WORKFLOWS = ROOT / "tests" / "data" / "osmo-workflows"
VERSION = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
               if line.startswith("version = "))
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PODMAN_LIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=32768:32768"]


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=kwargs.pop("timeout", 300), **kwargs)


def checked(argv: list[str], **kwargs) -> str:
    result = run(argv, **kwargs)
    assert result.returncode == 0, f"{argv} exited {result.returncode}: {result.stderr.strip()}"
    return result.stdout


def image_config(archive: ImageArchive, tag: str | None = None) -> dict:
    """The image's config, as skopeo reads it from the archive (by tag: it fails for a tag not there)."""
    return json.loads(checked([require_tool("skopeo"), "inspect", "--config",
                               f"docker-archive:{archive.path}:{tag or archive.tags[0]}"]))


# What a container runtime gives a container and an unpacked image lacks: a /dev with the usual devices.
MAKE_DEV = ('mount -t tmpfs -o mode=755 tmpfs "$0/dev" && mknod -m 666 "$0/dev/null" c 1 3 && '
            'mknod -m 666 "$0/dev/zero" c 1 5 && mknod -m 666 "$0/dev/urandom" c 1 9 && exec chroot "$@"')


def in_chroot(rootfs: Path, script: str, *, user: str | None = None, net_namespace: bool = False,
              env_path: str = IMAGE_PATH) -> subprocess.CompletedProcess:
    """``sh -c SCRIPT`` inside the unpacked image with the image's PATH, in a mount namespace of its own
    that gives it a /dev (and, if asked, in a network namespace with only loopback, so that nothing
    listens on the host's interfaces)."""
    namespaces = ["--mount", "--propagation", "private", *(["--net"] if net_namespace else [])]
    chroot = [*([f"--userspec={user}"] if user else []), str(rootfs), "/bin/sh", "-c", script]
    argv = [require_tool("unshare"), *namespaces, "--", "sh", "-c", MAKE_DEV, str(rootfs), *chroot]
    return run(["env", "-i", f"PATH={env_path}", "HOME=/root", *argv], timeout=60)


@pytest.fixture(scope="module")
def archives() -> dict[str, ImageArchive]:
    return image_archives()


@pytest.fixture(scope="module")
def unpack(archives, tmp_path_factory):
    """unpack(NAME) -> the image's rootfs, unpacked by skopeo (docker-archive -> OCI) and umoci, once."""
    if os.geteuid() != 0:
        pytest.fail("unpacking an image keeps its owners (root, uid 10001) and chroot needs root: run the "
                    "suite as root, as CI does")
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    base = tmp_path_factory.mktemp("unpacked")
    done: dict[str, Path] = {}

    def unpacked(name: str) -> Path:
        if name not in done:
            archive = archives[name]
            checked([skopeo, "--insecure-policy", "copy", "-q", f"docker-archive:{archive.path}:{archive.tags[0]}",
                     f"oci:{base / name}-oci:image"])
            checked([umoci, "unpack", "--image", f"{base / name}-oci:image", str(base / name)])
            done[name] = base / name / "rootfs"
        return done[name]

    yield unpacked
    shutil.rmtree(base, ignore_errors=True)


def test_the_alias_list_is_every_image_the_conformance_workflows_name():
    named = set()
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        workflow = load_file(path, set_items=["storage_url=s3://my-bucket"]).workflow
        named |= {task.image for group in workflow.groups for task in group.tasks}
    aliases = image_aliases()
    assert len(aliases) == len(set(aliases)) and set(aliases) == named
    assert {"ubuntu:24.04", "ubuntu:22.04", "alpine:3.18", "nvcr.io/nvidia/pytorch:24.01-py3"} <= named


def test_the_manifest_names_each_archive_with_its_tags_and_image_id(archives):
    expected = {"pause": ["localhost/osmo-pause:1"],
                "osmo-task": ["localhost/osmo-task:bookworm", *image_aliases()],
                "osmo-sidecar": [f"localhost/osmo-sidecar:{VERSION}",
                                 f"localhost/osmo-sidecar:{VERSION}-{archives['osmo-sidecar'].key[:12]}"]}
    for name in IMAGE_NAMES:
        archive = archives[name]
        assert list(archive.tags) == expected[name]
        # pods use imagePullPolicy IfNotPresent/Never: every tag is explicit and none is `latest`
        assert all(":" in tag.rsplit("/", 1)[-1] and not tag.endswith(":latest") for tag in archive.tags)
        with tarfile.open(archive.path) as tar:
            (image,) = json.load(tar.extractfile("manifest.json"))
            config = tar.extractfile(image["Config"]).read()
        assert archive.image_id == "sha256:" + hashlib.sha256(config).hexdigest()
        assert list(archive.repo_tags) == image["RepoTags"]
        for tag in archive.tags:  # skopeo finds the image under each of its names...
            assert image_config(archive, tag)["config"] == json.loads(config)["config"]
    # ...and not under a name it was not given
    missing = run([require_tool("skopeo"), "inspect", "--config",
                   f"docker-archive:{archives['osmo-task'].path}:ubuntu:99.04"])
    assert missing.returncode != 0
    assert "docker.io/library/ubuntu:24.04" in archives["osmo-task"].repo_tags


def test_each_image_starts_what_its_runner_expects(archives):
    sidecar = image_config(archives["osmo-sidecar"])
    assert sidecar["config"]["User"] == "10001:10001"
    assert sidecar["config"]["Entrypoint"] == ["osmo-sidecar"] and sidecar["config"]["Cmd"] == ["--help"]
    assert sidecar["config"]["WorkingDir"] == "/home/osmo"
    assert sidecar["config"]["Env"][0].startswith("PATH=/opt/osmo/bin:")
    assert "PYTHONUNBUFFERED=1" in sidecar["config"]["Env"]
    assert sidecar["config"]["Labels"]["org.opencontainers.image.version"] == VERSION
    assert len(sidecar["rootfs"]["diff_ids"]) == 3  # Debian + Python, the dependencies' venv, the project

    task = image_config(archives["osmo-task"])["config"]
    assert "Entrypoint" not in task and task["Cmd"] == ["bash"]  # a runner's command runs as given
    assert image_config(archives["pause"])["config"]["Entrypoint"] == ["/pause"]
    for name in IMAGE_NAMES:
        assert image_config(archives[name])["architecture"] == "amd64"


def test_the_task_image_runs_what_the_workflows_call(unpack):
    rootfs = unpack("osmo-task")
    for program in ("bash", "sh", "curl", "nc", "python3", "ip", "ps", "hostname", "tr", "wc", "seq", "sleep",
                    "apt-get"):
        assert in_chroot(rootfs, f"command -v {program}").returncode == 0, f"{program} is not in the task image"
    version = in_chroot(rootfs, "python3 -c 'import sys; print(sys.version_info[:2])'")
    assert version.returncode == 0 and version.stdout.strip() == "(3, 11)"
    assert in_chroot(rootfs, "bash -c 'for i in {1..10}; do echo $i; done | wc -l'").stdout.strip() == "10"
    # group_tasks_communication's nc exchange and robot_simulation's python3 http.server + curl, in a network
    # namespace of their own (loopback only)
    exchange = in_chroot(rootfs, """
        ip link set lo up
        echo hello > /tmp/hello.txt
        nc -w 5 -l -p 24831 < /tmp/hello.txt &
        sleep 0.5
        echo "nc: $(nc -w 5 127.0.0.1 24831)"
        mkdir -p /tmp/site && echo 3,1 > /tmp/site/step.txt && cd /tmp/site
        python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &
        server=$!
        until curl -sf http://127.0.0.1:8000/step.txt >/dev/null; do sleep 0.2; done
        echo "curl: $(curl -sf http://127.0.0.1:8000/step.txt)"
        kill $server""", net_namespace=True)
    assert exchange.returncode == 0, exchange.stderr
    assert exchange.stdout.splitlines() == ["nc: hello", "curl: 3,1"]
    # nothing of the build host was copied in
    assert not (rootfs / "etc" / "resolv.conf").exists() and not (rootfs / "etc" / "hostname").exists()
    assert list((rootfs / "dev").iterdir()) == []


def test_the_sidecar_image_holds_this_checkout_and_runs_as_10001(archives, unpack):
    rootfs = unpack("osmo-sidecar")
    now = _keys(ROOT)["osmo-sidecar"]
    assert now == archives["osmo-sidecar"].key, \
        f"the checkout changed after the image was built (key {archives['osmo-sidecar'].key}, now {now}): run again"
    help_text = in_chroot(rootfs, "osmo-sidecar --help", user="10001:10001", env_path=f"/opt/osmo/bin:{IMAGE_PATH}")
    assert help_text.returncode == 0, help_text.stderr
    assert "download" in help_text.stdout and "upload" in help_text.stdout
    assert "osmo:x:10001:10001::/home/osmo:/usr/sbin/nologin" in (rootfs / "etc" / "passwd").read_text()
    run_dir = (rootfs / "osmo" / "run").stat()
    assert (run_dir.st_uid, run_dir.st_gid) == (10001, 10001)
    site = rootfs / "opt" / "osmo" / "lib" / "python3.11" / "site-packages"
    for package in ("osmo_store", "osmo_run", "sidecar"):
        in_image = {p.relative_to(site): p.read_bytes() for p in (site / package).rglob("*.py")}
        in_checkout = {p.relative_to(ROOT): p.read_bytes() for p in (ROOT / package).rglob("*.py")}
        assert in_image == in_checkout, f"{package} in the image differs from the checkout"
    assert not (site / "pytest").exists(), "the test extra must stay out of the image"
    check = in_chroot(rootfs, "/opt/osmo/bin/pip check", env_path=f"/opt/osmo/bin:{IMAGE_PATH}")
    assert check.returncode == 0, check.stdout


def _pause_binary(archive: ImageArchive, folder: Path) -> Path:
    """The pause program, read out of the archive's single layer."""
    with tarfile.open(archive.path) as outer:
        (image,) = json.load(outer.extractfile("manifest.json"))
        (layer,) = image["Layers"]
        with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
            data = inner.extractfile("./pause").read()
    binary = folder / "pause"
    binary.write_bytes(data)
    binary.chmod(0o755)
    return binary


def _children(pid: int) -> list[tuple[int, str]]:
    """The children of process ``pid`` (of any of its threads: an orphan is handed to one of them) with
    their state (Z: a zombie no one reaped)."""
    found = []
    for thread in os.listdir(f"/proc/{pid}/task"):
        for child in open(f"/proc/{pid}/task/{thread}/children").read().split():
            found.append((int(child), open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]))
    return found


def _orphan_left_with(init: list[str]) -> list[tuple[int, str]]:
    """Start ``init`` as PID 1 of a new PID namespace, hand it an orphan that exits after 0.5 s, and return
    the init's children 1.5 s later. The namespace ends with the test (SIGKILL to its first process)."""
    sandbox = subprocess.Popen([require_tool("unshare"), "--pid", "--fork", "--", *init])
    first = None
    try:
        deadline = time.monotonic() + 5
        while not open(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children").read().split():
            assert time.monotonic() < deadline, "the namespace's first process did not start"
            time.sleep(0.05)
        first = int(open(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children").read().split()[0])
        # the orphan's output goes nowhere, so that nsenter returns when its shell exits, not when sleep does
        checked([require_tool("nsenter"), "--target", str(first), "--pid", "--", "sh", "-c",
                 "sleep 0.5 </dev/null >/dev/null 2>&1 & exit 0"])
        assert len(_children(first)) == 1, "the orphan was not handed to the namespace's first process"
        time.sleep(1.5)
        return _children(first)
    finally:
        if first is not None:
            os.kill(first, signal.SIGKILL)  # a namespace's first process ignores signals it has no handler for
        sandbox.wait(timeout=10)


def test_pause_sleeps_reaps_orphans_and_exits_0_on_term_and_int(archives, tmp_path):
    pause = _pause_binary(archives["pause"], tmp_path)
    assert pause.stat().st_size < 3 * 1024 * 1024
    assert b"ld-linux" not in pause.read_bytes(), "pause must be static: a pod's sandbox has no libc"
    for sig in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen([str(pause)])
        time.sleep(0.3)
        assert process.poll() is None, "pause must sleep until it is told to stop"
        process.send_signal(sig)
        assert process.wait(timeout=5) == 0
    assert _orphan_left_with([str(pause)]) == []
    # the same check catches a first process that does not reap: sleep leaves a zombie behind
    assert [state for _, state in _orphan_left_with(["sleep", "30"])] == ["Z"]


def test_a_second_run_is_a_no_op(archives):
    before = {name: archives[name].path.stat() for name in IMAGE_NAMES}
    manifest = (archives["pause"].path.parent / "manifest.json").read_bytes()
    start = time.monotonic()
    result = run_build_script("--out", str(archives["pause"].path.parent))
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()] == list(IMAGE_NAMES)
    assert all("up to date" in line for line in result.stdout.splitlines())
    # 0.2 s alone; a rebuild takes tens of seconds (the archives' inode and mtime below prove none happened)
    assert elapsed < 5.0, f"a warm run took {elapsed:.2f} s"
    for name in IMAGE_NAMES:
        after = archives[name].path.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[name].st_ino, before[name].st_mtime_ns)
    assert (archives["pause"].path.parent / "manifest.json").read_bytes() == manifest


def _copy_of_the_inputs(folder: Path) -> Path:
    """A copy of what the script reads: itself, the alias list and the project files of the sidecar."""
    for relative in (".ci/build-images.sh", "tests/data/image-aliases.txt", "pyproject.toml", "README.md"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, folder / relative)
    for package in ("osmo_store", "osmo_run", "sidecar"):
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _keys(checkout: Path) -> dict[str, str]:
    result = subprocess.run(["bash", str(checkout / ".ci" / "build-images.sh"), "--keys"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(line.split() for line in result.stdout.splitlines())


def test_the_cache_keys_follow_what_goes_into_each_image(tmp_path):
    checkout = _copy_of_the_inputs(tmp_path / "checkout")
    keys = _keys(checkout)
    assert set(keys) == set(IMAGE_NAMES) and keys == _keys(ROOT)  # the key does not depend on the folder

    (checkout / "osmo_run" / "__pycache__").mkdir(exist_ok=True)  # bytecode is not what goes in
    (checkout / "osmo_run" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert _keys(checkout) == keys

    with open(checkout / "osmo_run" / "__init__.py", "a") as source:  # a change of the code: only the sidecar
        source.write("# changed\n")
    changed = _keys(checkout)
    assert changed["osmo-sidecar"] != keys["osmo-sidecar"]
    assert (changed["pause"], changed["osmo-task"]) == (keys["pause"], keys["osmo-task"])

    with open(checkout / "tests" / "data" / "image-aliases.txt", "a") as aliases:  # a new name: only the task
        aliases.write("debian:12\n")
    retagged = _keys(checkout)
    assert retagged["osmo-task"] != keys["osmo-task"]
    assert (retagged["pause"], retagged["osmo-sidecar"]) == (keys["pause"], changed["osmo-sidecar"])


def test_bad_arguments_exit_2_naming_the_argument(tmp_path):
    for args, named in ((["no-such-image"], "'no-such-image'"), (["--bogus"], "--bogus"), (["--out"], "--out")):
        result = run(["bash", str(BUILD_SCRIPT), *args], env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
        assert result.returncode == 2 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and named in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing written


def test_podman_loads_the_task_image_under_every_workflow_name(archives):
    """In a storage of its own, removed afterwards (a short folder: podman refuses a runroot path longer than
    50 characters), with the limits this VM allows (.ci/install-podman.sh makes them the defaults)."""
    storage = Path(tempfile.mkdtemp(prefix="osmo-podman-", dir="/tmp"))
    podman = [require_tool("podman"), "--root", str(storage / "root"), "--runroot", str(storage / "run")]
    task = archives["osmo-task"]
    try:
        loaded = checked([*podman, "load", "-i", str(task.path)], timeout=300)
        assert all(f"Loaded image: {tag}" in loaded for tag in task.repo_tags)
        listed = checked([*podman, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
        assert {tuple(line.split()) for line in listed.splitlines()} == \
            {(tag, task.image_id) for tag in task.repo_tags}
        for name in task.tags:  # each as a workflow writes it
            said = checked([*podman, "run", "--rm", "--network", "none", *PODMAN_LIMITS, name,
                            "python3", "-c", "print(1)"], timeout=120)
            assert said == "1\n", name
        assert checked([*podman, "ps", "--all", "--quiet"]) == ""  # --rm left no container
    finally:
        run([*podman, "rmi", "--all", "--force"])
        mounts = [line.split()[1] for line in open("/proc/mounts") if str(storage) in line]
        shutil.rmtree(storage, ignore_errors=True)
    assert mounts == [], "podman left mounts behind"
