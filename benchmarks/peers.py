"""The tools ``benchmarks.compare`` and ``benchmarks.scaling`` measure, behind one interface (``Tool``):
osmo (``Osmo``, the CLI under test), restic (``Restic``) and borg (``Borg``). Each knows how to make an
empty repository, back a folder up, restore it and where its caches are; ``run`` measures a command
(``benchmarks._measure``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks._measure import Measured, run_measured


class Tool:
    name = "?"

    def __init__(self, work: Path):
        self.work = work / self.name
        self.repo = self.work / "repo"
        self.logs = self.work / "logs"

    # --- to override -----------------------------------------------------
    def env(self) -> dict:
        return dict(os.environ)

    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def backup_cmd(self, label: str, src: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError

    def restore_cmd(self, label: str, target: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError

    def restored_root(self, target: Path, src: Path) -> Path:
        return target

    def cache_dirs(self) -> list[Path]:
        return []

    def after_backup(self, label: str, m: Measured) -> dict:
        return {}

    def after_restore(self, m: Measured) -> dict:
        return {}

    # --- common ----------------------------------------------------------
    def prepare(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def run(self, cmd: list[str], label: str, cwd: Path | None = None) -> Measured:
        return run_measured(cmd, env=self.env(), cwd=cwd, log_dir=self.logs, label=label).check()

    def quick(self, cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env(), cwd=cwd, capture_output=True, text=True)


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path):
        super().__init__(work)
        self.compression_flag: list[str] = []
        self.repo_version = "?"

    def env(self) -> dict:
        e = dict(os.environ)
        e.update(
            RESTIC_PASSWORD="bench",
            RESTIC_REPOSITORY=str(self.repo),
            RESTIC_CACHE_DIR=str(self.work / "cache"),
        )
        return e

    def version(self) -> str:
        return subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()

    def init(self) -> None:
        self.run(["restic", "init", "--repo", str(self.repo)], "init")
        cfg = self.quick(["restic", "--repo", str(self.repo), "cat", "config"])
        try:
            self.repo_version = str(json.loads(cfg.stdout).get("version", "?"))
        except ValueError:
            self.repo_version = "?"
        helptext = self.quick(["restic", "backup", "--help"]).stdout
        # --compression exists from restic 0.14 on, and only for repo format v2
        if "--compression" in helptext and self.repo_version not in ("1", "?"):
            self.compression_flag = ["--compression", "off"]
        else:
            self.compression_flag = []

    def backup_cmd(self, label, src):
        return (
            ["restic", "--repo", str(self.repo), "backup", "--host", "bench", "--tag", label,
             *self.compression_flag, str(src)],
            None,
        )

    def restore_cmd(self, label, target):
        return (
            ["restic", "--repo", str(self.repo), "restore", "latest", "--host", "bench",
             "--tag", label, "--target", str(target)],
            None,
        )

    def restored_root(self, target, src):
        # restic keeps absolute paths: the tree lands under TARGET/<abs path>
        return target / src.resolve().relative_to("/")

    def cache_dirs(self):
        return [self.work / "cache"]

    def notes(self) -> str:
        return f"repo format v{self.repo_version}, flags: {' '.join(self.compression_flag) or '(no --compression)'}"


class Borg(Tool):
    name = "borg"

    def env(self) -> dict:
        e = dict(os.environ)
        e.update(
            BORG_BASE_DIR=str(self.work / "base"),
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_PASSPHRASE="",
        )
        return e

    def version(self) -> str:
        return subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip()

    def init(self) -> None:
        (self.work / "base").mkdir(parents=True, exist_ok=True)
        self.run(["borg", "init", "--encryption", "none", str(self.repo)], "init")

    def backup_cmd(self, label, src):
        return (["borg", "create", "--compression", "none", f"{self.repo}::{label}", "."], src)

    def restore_cmd(self, label, target):
        return (["borg", "extract", f"{self.repo}::{label}"], target)

    def cache_dirs(self):
        return [self.work / "base"]

    def notes(self) -> str:
        return "--encryption none, --compression none, default chunker"


class Osmo(Tool):
    name = "osmo"
    dataset = "bench"

    def __init__(self, work: Path, cmd: list[str]):
        super().__init__(work)
        self.cmd = cmd
        self.repo = self.work / "store"
        self.versions: dict[str, int] = {}
        self.reports: dict[str, dict] = {}
        self.init_note = ""

    def env(self) -> dict:
        e = dict(os.environ)
        e["OSMO_CACHE_DIR"] = str(self.work / "osmo-cache")
        return e

    def version(self) -> str:
        r = subprocess.run(self.cmd + ["--version"], capture_output=True, text=True, env=self.env())
        return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 and (r.stdout or r.stderr).strip() else "osmo (version n/a)"

    def base(self) -> list[str]:
        return self.cmd + ["--store", str(self.repo)]

    def init(self) -> None:
        r = self.quick(self.base() + ["store", "init"])
        if r.returncode != 0:
            # the store is also created on first use; note it and go on
            self.init_note = f"`store init` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"
            print(f"  note: osmo {self.init_note}", file=sys.stderr)

    def backup_cmd(self, label, src):
        return (self.base() + ["dataset", "upload", self.dataset, str(src), "--json"], None)

    def after_backup(self, label, m):
        rep = m.json_out()
        self.reports[label] = rep
        if "version" in rep:
            self.versions[label] = int(rep["version"])
        return {"osmo_report": rep}

    def restore_cmd(self, label, target):
        ver = self.versions.get(label, int(label.lstrip("v")))
        return (self.base() + ["dataset", "download", f"{self.dataset}:{ver}", str(target), "--json"], None)

    def after_restore(self, m):
        return {"osmo_report": m.json_out()}

    def cache_dirs(self):
        return [self.work / "osmo-cache"]

    def notes(self) -> str:
        return f"cmd: {' '.join(self.cmd)}" + (f"; {self.init_note}" if self.init_note else "")
