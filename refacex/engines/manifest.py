"""The run manifest: one SQLite row per input, so a killed run resumes where it stopped.

Why a database and not "skip outputs that exist": an output that exists may be from a
run with other settings or of an input that has changed since, and checking that it is
complete means decoding it (``--resume`` without a manifest does exactly that, seconds per
video). A row says what was done, to which input (size and mtime when it was read), with
which settings (a digest of method, tiers, format, keys), how long it took, on which
worker, and for failures why. It is written only *after* the output was renamed into
place, so "done" in the manifest always means a complete output; a run killed between
the rename and the row redoes that one file, never loses it.

Where: ``OUT/.refacex-manifest.sqlite`` (plus SQLite's ``-wal``/``-shm`` while open),
mode 0600, because its rows name the inputs (with ``--rename`` they hold only the hashed
output names). WAL mode: the driver commits one small transaction per file, readers
(``sqlite3`` in a shell, a second run) never block it, and a SIGKILL loses at most the
row being written. Several runs may open it at once (``busy_timeout``); each records
itself in ``runs`` with host and pid, so a later run can tell a dead run's temp files
from a live run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from refacex.errors import OutputError

FILENAME = ".refacex-manifest.sqlite"
SCHEMA = 1
STATUSES = ("pending", "running", "done", "failed")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL, engine TEXT NOT NULL, workers INTEGER,
    host TEXT NOT NULL, pid INTEGER NOT NULL,
    started REAL NOT NULL, finished REAL, files INTEGER, failed INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    command TEXT NOT NULL,
    id TEXT NOT NULL,          -- the input's resolved path; with --rename its output name
    kind TEXT NOT NULL,        -- image | video
    input TEXT,                -- NULL with --rename (the name may identify the person)
    output TEXT NOT NULL,
    size INTEGER, mtime_ns INTEGER,   -- the input when it was read
    settings TEXT NOT NULL,    -- digest of the options and keys (engines.tasks.Job.digest)
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    result TEXT,               -- the file's JSON report (faces, donors, tiers)
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT, run INTEGER,
    started REAL, finished REAL, seconds REAL,
    PRIMARY KEY (command, id)
);
"""


@dataclass(frozen=True)
class Entry:
    """What ``Manifest`` needs to know of one input."""

    id: str
    kind: str
    input: str | None
    output: str
    size: int | None
    mtime_ns: int | None


def entry(kind: str, src: Path, dest: Path, private_name: str | None = None) -> Entry:
    """The manifest entry of ``src -> dest``; ``private_name`` (``--rename``) replaces the
    input's path everywhere in the row."""
    try:
        st = src.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size = mtime = None
    ident = private_name if private_name is not None else str(src.resolve())
    return Entry(ident, kind, None if private_name is not None else str(src),
                 str(dest.resolve()), size, mtime)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class Manifest:
    """An open manifest; every ``mark_*`` is its own committed transaction."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = Path(path)
        self.command = command
        self.run_id: int | None = None
        try:
            # Created 0600 before SQLite opens it (SQLite gives -wal/-shm the same mode).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a process kill loses nothing
            self.db.executescript(_DDL)
            got = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if got is None:
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            elif got[0] != str(SCHEMA):
                raise OutputError(f"{self.path}: manifest schema {got[0]} is not the one this "
                                  f"refacex writes ({SCHEMA}); delete it to start afresh")
        except sqlite3.DatabaseError as exc:
            raise OutputError(f"{self.path}: not a usable refacex manifest ({exc}); delete it "
                              "to start afresh") from None
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot open the manifest "
                              f"({exc.strerror or exc})") from None

    @classmethod
    def beside(cls, outdir: Path, command: str) -> Manifest:
        """The manifest of the output folder ``outdir``."""
        return cls(Path(outdir) / FILENAME, command)

    @contextlib.contextmanager
    def _tx(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------

    def start_run(self, engine: str, workers: int | None = None) -> int:
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO runs (command, engine, workers, host, pid, started) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.command, engine, workers, socket.gethostname(), os.getpid(), time.time()))
        self.run_id = int(cur.lastrowid)
        return self.run_id

    def finish_run(self, files: int, failed: int) -> None:
        if self.run_id is None:
            return
        with self._tx():
            self.db.execute("UPDATE runs SET finished=?, files=?, failed=? WHERE id=?",
                            (time.time(), files, failed, self.run_id))

    def others_running(self) -> bool:
        """Is another run into this folder still alive? (Then its temp files are live.)

        A run on another host, or one whose pid is alive here, counts as alive; a run
        on this host whose process is gone was killed."""
        host = socket.gethostname()
        rows = self.db.execute("SELECT id, host, pid FROM runs WHERE finished IS NULL").fetchall()
        return any(rid != self.run_id and (h != host or _alive(pid)) for rid, h, pid in rows)

    # -- tasks --------------------------------------------------------------------------

    def is_done(self, e: Entry, settings: str) -> bool:
        """Done for this very input (size, mtime) with these settings, output present."""
        row = self.db.execute(
            "SELECT status, size, mtime_ns, settings, output FROM tasks "
            "WHERE command=? AND id=?", (self.command, e.id)).fetchone()
        return (row is not None and row[0] == "done" and row[1] == e.size
                and row[2] == e.mtime_ns and row[3] == settings and row[4] == e.output
                and Path(row[4]).is_file())

    def known(self, e: Entry) -> bool:
        return self.db.execute("SELECT 1 FROM tasks WHERE command=? AND id=?",
                               (self.command, e.id)).fetchone() is not None

    def status(self, e: Entry) -> str | None:
        row = self.db.execute("SELECT status FROM tasks WHERE command=? AND id=?",
                              (self.command, e.id)).fetchone()
        return row[0] if row else None

    def mark_pending(self, entries: Iterable[Entry], settings: str) -> None:
        """Record what this run will do, in one transaction (a row per input)."""
        with self._tx():
            for e in entries:
                self.db.execute(
                    "INSERT INTO tasks (command, id, kind, input, output, size, mtime_ns, "
                    "settings, status, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?) "
                    "ON CONFLICT (command, id) DO UPDATE SET kind=excluded.kind, "
                    "input=excluded.input, output=excluded.output, size=excluded.size, "
                    "mtime_ns=excluded.mtime_ns, settings=excluded.settings, "
                    "status='pending', error=NULL, result=NULL, run=excluded.run, "
                    "started=NULL, finished=NULL, seconds=NULL",
                    (self.command, e.id, e.kind, e.input, e.output, e.size, e.mtime_ns,
                     settings, self.run_id))

    def mark_running(self, e: Entry, worker: str = "") -> None:
        with self._tx():
            self.db.execute("UPDATE tasks SET status='running', attempts=attempts+1, "
                            "worker=?, started=? WHERE command=? AND id=?",
                            (worker, time.time(), self.command, e.id))

    def mark_done(self, e: Entry, settings: str, result: dict | None, seconds: float,
                  worker: str = "") -> None:
        """The output is in place: call this only after its rename."""
        with self._tx():
            self.db.execute(
                "INSERT INTO tasks (command, id, kind, input, output, size, mtime_ns, settings, "
                "status, result, worker, run, finished, seconds, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (command, id) DO UPDATE SET status='done', error=NULL, "
                "result=excluded.result, worker=excluded.worker, run=excluded.run, "
                "finished=excluded.finished, seconds=excluded.seconds, "
                "size=excluded.size, mtime_ns=excluded.mtime_ns, settings=excluded.settings, "
                "output=excluded.output",
                (self.command, e.id, e.kind, e.input, e.output, e.size, e.mtime_ns, settings,
                 json.dumps(result, default=str) if result is not None else None, worker,
                 self.run_id, time.time(), seconds))

    def mark_failed(self, e: Entry, error: str, seconds: float, worker: str = "") -> None:
        with self._tx():
            self.db.execute("UPDATE tasks SET status='failed', error=?, result=NULL, worker=?, "
                            "finished=?, seconds=? WHERE command=? AND id=?",
                            (error, worker, time.time(), seconds, self.command, e.id))

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM tasks WHERE command=? "
                               "GROUP BY status", (self.command,)).fetchall()
        return {s: 0 for s in STATUSES} | dict(rows)

    def rows(self, status: str | None = None) -> list[dict]:
        """The rows (all, or of one status) as dicts, for reports and tests."""
        cur = self.db.execute(
            "SELECT * FROM tasks WHERE command=?" + (" AND status=?" if status else "")
            + " ORDER BY id", (self.command, status) if status else (self.command,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
