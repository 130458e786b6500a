"""The state database: one SQLite file in WAL mode (readers in other shells never block the
supervisor, and a crash loses at most the last transaction). Only the stdlib ``sqlite3`` is used.

Times are UNIX seconds (REAL); JSON columns hold lists or objects as text. The file is created 0600
(SQLite gives its -wal and -shm files the same mode); one found open to others is tightened.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Iterator

from osmo_run.local.paths import tighten

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL,
    status TEXT NOT NULL, reason TEXT, exit_code INTEGER,
    submitted_at REAL NOT NULL, started_at REAL, ended_at REAL,
    file TEXT, store TEXT, spec TEXT NOT NULL, settings TEXT, isolation TEXT,
    supervisor_pid INTEGER, supervisor_start INTEGER, supervisor_boot TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    UNIQUE (name, seq)
);
CREATE TABLE IF NOT EXISTS groups (
    workflow_id TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
    status TEXT NOT NULL, reason TEXT, exit_code INTEGER,
    scheduled_at REAL, started_at REAL, ended_at REAL,
    PRIMARY KEY (workflow_id, name)
);
CREATE TABLE IF NOT EXISTS tasks (
    workflow_id TEXT NOT NULL, name TEXT NOT NULL, group_name TEXT NOT NULL,
    position INTEGER NOT NULL, lead INTEGER NOT NULL,
    status TEXT NOT NULL, reason TEXT, exit_code INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    host TEXT, started_at REAL, ended_at REAL,
    PRIMARY KEY (workflow_id, name)
);
CREATE TABLE IF NOT EXISTS attempts (
    workflow_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL,
    status TEXT NOT NULL, reason TEXT, exit_code INTEGER, command_exit_code INTEGER,
    run_dir TEXT, started_at REAL, command_started_at REAL, command_ended_at REAL, ended_at REAL,
    datasets_read TEXT NOT NULL DEFAULT '[]', datasets_written TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (workflow_id, task, attempt)
);
CREATE TABLE IF NOT EXISTS allocations (
    workflow_id TEXT NOT NULL, group_name TEXT NOT NULL,
    cpu REAL NOT NULL, memory INTEGER NOT NULL, gpu INTEGER NOT NULL,
    pid INTEGER NOT NULL, pid_start INTEGER NOT NULL, boot TEXT NOT NULL, granted_at REAL NOT NULL,
    PRIMARY KEY (workflow_id, group_name)
);
CREATE TABLE IF NOT EXISTS gpu_assignments (
    gpu_index INTEGER PRIMARY KEY, uuid TEXT NOT NULL,
    workflow_id TEXT NOT NULL, group_name TEXT NOT NULL, task TEXT NOT NULL, granted_at REAL NOT NULL
);
"""


def _private(path: str) -> None:
    """Create the database file owner-only, before SQLite does; tighten an existing one."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        tighten(name, 0o600)


def connect(path: str) -> sqlite3.Connection:
    """Open (and create on first use) the database; autocommit, use ``transaction`` to group writes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _private(path)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # e.g. a file system without shared memory: still correct
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = NORMAL")
    with transaction(conn):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken up front,
    so read-then-write sequences (allocating ids, admitting gangs) are atomic across processes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
