"""The host process a task's container runs under: the container-engine twin of ``taskinit``.

``python -m osmo_run.local.containerinit /dev/stdin`` (its config on an anonymous in-memory file: it
holds the task's environment, credentials included), started by the attempt, child of the supervisor:

1. ``create`` the container from its ``ContainerSpec`` (``engine_cli``). The task's variables reach
   the engine as an env file that is an anonymous in-memory file (``/proc/self/fd/N``): never on disk,
   never on a command line. A value of several lines, which an env file cannot hold, goes through the
   engine process's own environment (``--env NAME``); a name the engine itself reads (``PATH``,
   ``HOME``, ``XDG_*``, ...) cannot, and the task fails to start.
2. ``files:`` under ``/osmo/work`` and ``/osmo/data/output`` are written into the run directory
   (``taskfiles``: fresh folders, never through a link); every other one is copied into the
   container's own file system (a tar archive on ``cp``'s stdin, extracted inside the container's root:
   a link of the image is resolved there, and nothing is written outside the container).
   -> "R" on the ready pipe, or "E<reason>" (the task fails to start, 3003); then wait for "G".
3. ``start --attach``: the command's stdout and stderr are this process's (the task log, or the masking
   relay in front of it).
4. Exit with the command's exit code (128+N for signal N: 137 after SIGKILL or an out-of-memory kill).
   The container is removed (``rm --force --volumes``) whatever happened.

SIGTERM (the runner stops the task, or the supervisor died: PR_SET_PDEATHSIG) -> ``stop --time GRACE``:
the container gets SIGTERM, SIGKILL after the grace period, then as 4. Before the start, SIGTERM or a
closed go pipe removes the container at once.

``--image CONFIG``: the step before the inputs. Is the image here? If not, ``pull`` it, the engine's
progress in the task log; exit 0, else 1 with the reason (the engine's last line) in ``error_file``.

Standard library, ``procs``, ``taskfiles`` and ``engine_cli`` only (one starts per attempt).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

from osmo_run.local import procs, taskfiles
from osmo_run.local.engine_cli import ContainerSpec, EngineCli

SETUP_FAILED = 3
ENGINE_FAILED = 125  # what engines return when they could not run the container
NOT_FOUND, NOT_EXECUTABLE = 127, 126
TAIL = 4096
COMMAND_TIMEOUT = 120.0
# variables the engine's CLI reads itself: a task's value for one of them cannot pass through its environment
ENGINE_VARIABLES = ("PATH", "HOME", "TMPDIR", "USER", "LANG", "XDG_", "CONTAINERS_", "CONTAINER_", "DOCKER_",
                    "REGISTRY_", "STORAGE_", "BUILDAH_", "PODMAN_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class SetupError(Exception):
    """The container could not be made ready: the task fails to start (3003)."""


def _say(text: str) -> None:
    os.write(1, "".join(f"[osmo] {line}\n" for line in text.splitlines()).encode("utf-8", errors="replace"))


def cli_of(cfg: dict) -> EngineCli:
    engine = cfg["engine"]
    return EngineCli(engine["kind"], engine["path"], tuple(engine.get("ulimits") or ()))


class Tee(threading.Thread):
    """Copies a pipe to fd 2 (the task log) and keeps its last bytes, for the reason of a failure."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe, self.tail = pipe, b""

    def run(self) -> None:
        for chunk in iter(lambda: self.pipe.read1(65536), b""):
            os.write(2, chunk)
            self.tail = (self.tail + chunk)[-TAIL:]

    def last_line(self) -> str:
        lines = [line.strip() for line in self.tail.decode("utf-8", errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else ""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=kwargs.pop("stdin", subprocess.DEVNULL), capture_output=True,
                          timeout=COMMAND_TIMEOUT, **kwargs)


def _reason(done: subprocess.CompletedProcess, what: str) -> str:
    text = done.stderr.decode("utf-8", errors="replace") if isinstance(done.stderr, bytes) else done.stderr or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{what}: {lines[-1] if lines else f'exit {done.returncode}'}"


# -- the image ---------------------------------------------------------------------------------------
def ensure_image(cfg: dict) -> int:
    cli, image = cli_of(cfg), cfg["image"]
    try:
        if _run(cli.image_present(image)).returncode == 0:
            return 0
        _say(f"image {image} is not here: pulling it ({cli.kind} pull {image})")
        started = time.monotonic()
        proc = subprocess.Popen(cli.pull(image), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        tee = Tee(proc.stderr)
        tee.start()
        code = proc.wait()
        tee.join(10)
    except (OSError, subprocess.SubprocessError) as exc:
        return _image_failed(cfg, f"image {image}: {cli.kind} did not run: {exc}")
    if code != 0:
        return _image_failed(cfg, f"image {image} cannot be had: {tee.last_line() or f'{cli.kind} pull exited {code}'}")
    _say(f"image {image} pulled in {time.monotonic() - started:.1f} s")
    return 0


def _image_failed(cfg: dict, reason: str) -> int:
    with open(cfg["error_file"], "w", encoding="utf-8") as f:
        f.write(reason)
    return 1


# -- the container -----------------------------------------------------------------------------------
def env_file(env: dict[str, str]) -> tuple[int, dict[str, str]]:
    """An in-memory env file (``NAME=VALUE`` lines) and the variables it cannot hold (several lines)."""
    lines, rest = [], {}
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            if name.startswith(ENGINE_VARIABLES):
                raise SetupError(f"environment: {name} has a value of several lines, which the engine cannot pass")
            rest[name] = value
        else:
            lines.append(f"{name}={value}\n")
    fd = os.memfd_create("osmo-env", 0)
    data = memoryview("".join(lines).encode("utf-8"))
    while data:
        data = data[os.write(fd, data):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd, rest


def files_archive(files: list[dict]) -> bytes:
    """A tar archive of the ``files`` that go into the container's own file system (owner root)."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in files:
            data = base64.b64decode(item["data"])
            info = tarfile.TarInfo(item["view"].lstrip("/"))
            info.size, info.mode, info.mtime = len(data), item.get("mode", 0o755), now
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def create(cfg: dict, cli: EngineCli, spec: ContainerSpec) -> None:
    fd, rest = env_file(cfg["env"])
    try:
        done = _run(cli.create(spec, f"/proc/self/fd/{fd}", tuple(rest)), pass_fds=(fd,), env={**os.environ, **rest})
    finally:
        os.close(fd)
    if done.returncode != 0:
        raise SetupError(_reason(done, f"{cli.kind} create"))
    on_host = [f for f in cfg["files"] if f.get("root")]
    inside = [f for f in cfg["files"] if not f.get("root")]
    taskfiles.write_files(on_host)
    if inside:
        done = _run(cli.copy_in(spec.name), stdin=None, input=files_archive(inside))
        if done.returncode != 0:
            raise SetupError(_reason(done, "files: " + ", ".join(f["view"] for f in inside)))


def remove(cli: EngineCli, name: str) -> None:
    try:
        _run(cli.remove(name))
    except (OSError, subprocess.SubprocessError) as exc:
        os.write(2, f"[osmo] the container {name} could not be removed: {exc}\n".encode())


def exit_code(code: int, tee: Tee) -> int:
    """The engine's own failure to start the command, as a shell reports it (127 not found, 126)."""
    if code != ENGINE_FAILED:
        return code
    line = tee.last_line().lower()
    if "not found" in line or "no such file" in line:
        return NOT_FOUND
    if "permission denied" in line:
        return NOT_EXECUTABLE
    return code


def run(cfg: dict, cli: EngineCli, spec: ContainerSpec) -> int:
    state = {"stopper": None, "proc": None, "term": False}

    def on_term(*_):
        state["term"] = True
        if state["proc"] is not None and state["stopper"] is None:
            state["stopper"] = subprocess.Popen(cli.stop(spec.name, cfg["grace"]), stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    signal.signal(signal.SIGTERM, on_term)
    ready, go = cfg["ready_fd"], cfg["go_fd"]
    try:
        create(cfg, cli, spec)
    except (SetupError, taskfiles.FilesError, OSError, subprocess.SubprocessError) as exc:
        remove(cli, spec.name)
        os.write(ready, f"E{exc}".encode(errors="replace"))
        return SETUP_FAILED
    os.write(ready, b"R")
    os.close(ready)
    try:
        if state["term"] or os.read(go, 1) != b"G":
            remove(cli, spec.name)
            return 1  # the runner gave up before the start (cancel, or the group failed)
    except InterruptedError:
        remove(cli, spec.name)
        return 1
    os.close(go)
    proc = subprocess.Popen(cli.start(spec.name), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tee = Tee(proc.stderr)
    tee.start()
    state["proc"] = proc
    if state["term"]:
        on_term()
    while True:
        try:
            code = proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            stopper = state["stopper"]
            if stopper is not None and stopper.poll() is not None:  # stopped before it had started: again
                state["stopper"] = None
                on_term()
    tee.join(10)
    if state["stopper"] is not None:
        state["stopper"].wait()
    remove(cli, spec.name)
    return exit_code(code, tee)


def main(argv: list[str]) -> int:
    image_step = argv[:1] == ["--image"]
    with open(argv[-1], encoding="utf-8") as f:
        cfg = json.load(f)
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != cfg["parent"]:
        return 1  # the supervisor is already gone
    if image_step:
        return ensure_image(cfg)
    if cfg.get("workdir"):  # the engine's helpers write files in their working folder (Podman's conmon: an
        os.chdir(cfg["workdir"])  # empty "oom" when the container is OOM-killed): the attempt's, not the user's
    return run(cfg, cli_of(cfg), ContainerSpec.from_json(cfg["container"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
