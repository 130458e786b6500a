"""Writing a task's ``files:`` (in taskinit, before its command starts) so that no write ever leaves
the task's own folders or its private view, whatever symbolic links or mounts lie on the way.

Each entry comes from the runner (``prepare``) as ``root``, a folder the runner made or trusts (``/``
of the task's view in namespaces mode; the attempt's ``files/``, ``data/`` or ``work/`` folder in
plain mode), ``path`` inside it (normalised by the spec: no ``.``, ``..`` or empty names) and
``view``, the path the task sees (for messages).

- ``overlay_roots`` (namespaces mode): the host folders an overlay must cover so that writing the
  files changes nothing on the host: the deepest existing folder above each file (found with
  ``lstat``: a symbolic link or a file on the way is refused), outer folders only. ``/tmp`` and
  ``/osmo`` are private mounts already; a file whose top-level folder the host lacks lands in the
  view's own root (a tmpfs), so it needs none.
- ``write_file`` walks from ``root`` one name at a time (``openat`` with ``O_NOFOLLOW``): a symbolic
  link anywhere on the way is refused, never followed; missing folders are created (0755). Outside
  an overlay the file must be new (``O_EXCL``: nothing of the host is mounted there to be replaced);
  inside one it may replace a regular file (the overlay keeps the host's file as it was).

Every refusal is a ``FilesError`` naming the path and the reason; the task then fails before its
command starts. Standard library only (taskinit starts once per attempt).
"""

from __future__ import annotations

import base64
import errno
import os
import stat

FORBIDDEN = ("/proc", "/sys", "/dev")
PRIVATE = ("/tmp", "/osmo")  # private mounts of the view (tmpfs; /osmo/data and /osmo/work are the task's)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class FilesError(Exception):
    """A ``files:`` entry cannot be written where the task's view puts it."""


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _link_or_not_folder(view: str, shown: str, st: os.stat_result, target: str) -> FilesError:
    if stat.S_ISLNK(st.st_mode):
        return FilesError(f"files: {view}: {shown} is a symbolic link (to {target}); a file is never "
                          "written through a link")
    return FilesError(f"files: {view}: {shown} is not a folder")


def _nearest_folder(view: str) -> str:
    """The deepest existing folder on the way to ``view`` (its parent at most), every name checked
    with ``lstat``: a symbolic link or a file on the way is a ``FilesError``."""
    folder = "/"
    for name in view.strip("/").split("/")[:-1]:
        nxt = folder.rstrip("/") + "/" + name
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise FilesError(f"files: {view}: {nxt}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise _link_or_not_folder(view, nxt, st, os.readlink(nxt) if stat.S_ISLNK(st.st_mode) else "")
        folder = nxt
    return folder


def overlay_roots(views: list[str]) -> list[str]:
    """Namespaces mode: the host folders to cover with an overlay before ``views`` are written."""
    roots = set()
    for view in views:
        if any(under(view, bad) for bad in FORBIDDEN):
            raise FilesError(f"files: cannot write {view} (under {', '.join(FORBIDDEN)})")
        if any(under(view, private) for private in PRIVATE):
            continue
        folder = _nearest_folder(view)
        if folder != "/":
            roots.add(folder)
    return sorted(r for r in roots if not any(o != r and under(r, o) for o in roots))


def _enter(fd: int, name: str, view: str, shown: str) -> int:
    """The folder ``name`` in folder ``fd`` (created if missing), opened without following a link."""
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
        raise _link_or_not_folder(view, shown, st, target) from None


def _open_file(fd: int, name: str, view: str, exclusive: bool) -> int:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise FilesError(f"files: {view} is a symbolic link (to {os.readlink(name, dir_fd=fd)}); a file "
                             "is never written through a link")
        if stat.S_ISDIR(st.st_mode):
            raise FilesError(f"files: {view} is a folder in the task's view")
        if not stat.S_ISREG(st.st_mode):
            raise FilesError(f"files: {view} exists and is not a regular file")
        if exclusive:
            raise FilesError(f"files: {view} already exists in the task's view and is not the task's to replace")
    try:
        out = os.open(name, _FILE_FLAGS | (os.O_EXCL if exclusive or st is None else 0), 0o600, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EEXIST, errno.ENXIO, errno.EISDIR):
            raise FilesError(f"files: {view} changed while it was written ({exc.strerror})") from None
        raise
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise FilesError(f"files: {view} exists and is not a regular file")
    return out


def write_file(item: dict, exclusive: bool) -> None:
    """Write one entry (``root``, ``path``, ``view``, base64 ``data``, ``mode``); see the module."""
    try:
        _write(item, exclusive)
    except OSError as exc:  # e.g. a folder the task's user may not write: named by the task's path
        raise FilesError(f"files: {item['view']}: {exc.strerror or exc}") from None


def _write(item: dict, exclusive: bool) -> None:
    view, names = item["view"], item["path"].split("/")
    if any(name in ("", ".", "..") for name in names):
        raise FilesError(f"files: {view}: {item['path']!r} is not a normalised path")
    parts = view.strip("/").split("/")
    offset = len(parts) - len(names)  # ``path`` is the tail of ``view`` below ``root``
    fd = os.open(item["root"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(names[:-1]):
            nxt = _enter(fd, name, view, "/" + "/".join(parts[:offset + depth + 1]))
            os.close(fd)
            fd = nxt
        out = _open_file(fd, names[-1], view, exclusive)
    finally:
        os.close(fd)
    try:
        data = memoryview(base64.b64decode(item["data"]))
        while data:
            data = data[os.write(out, data):]
        os.fchmod(out, item.get("mode", 0o755))
    finally:
        os.close(out)


def write_files(files: list[dict], overlays: list[str] = ()) -> None:
    """Write every entry; a file under one of ``overlays`` may replace a host file's view, any other
    must be new."""
    for item in files:
        write_file(item, exclusive=not any(under(item["view"], root) for root in overlays))
