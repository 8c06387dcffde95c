"""The per-pipeline state store: one SQLite file with a versioned schema.

``PRAGMA user_version`` holds the schema version; ``MIGRATIONS[n]`` upgrades a
database from version ``n`` to ``n + 1``. Only the reconcile loop's thread writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockyard.errors import StoreError, UnknownReference
from dockyard.lifecycles import (
    ATTEMPT,
    INSTANCE,
    RUN,
    AttemptEvent,
    AttemptState,
    InstanceEvent,
    Phase,
    RunEvent,
    RunState,
    advance,
)
from dockyard.state.rows import AttemptRow, CacheEntry, InstanceRow, RunRow
from dockyard.state.schema import MIGRATIONS, SCHEMA_VERSION
from dockyard.state.state_folder import prepare_state_folder

_ENCODE = json.JSONEncoder().encode  # (json.dumps would make one per call)

PENDING = Phase.PENDING.value  # (every instance, as its run begins)


class Store:
    def __init__(self, path: Path):
        self.path = path
        prepare_state_folder(path.parent, path)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"state store {path} is unusable: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"state store {self.path} has schema version {current}, newer than this "
                f"dockyard understands ({SCHEMA_VERSION}); upgrade dockyard"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction():
                for statement in _statements(MIGRATIONS[version]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing; inside another transaction, part of that one."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- writes ---------------------------------------------------------------------------------

    def create_run(self, run: RunRow, instances: Sequence[tuple[str, str]]) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.id,
                    run.pipeline,
                    run.spec_sha256,
                    run.state,
                    run.started_at,
                    run.ended_at,
                    run.pool_cpus,
                    run.pool_memory,
                    run.message,
                    run.images,
                    run.image_packages,
                    run.params,
                ),
            )
            self.db.executemany(
                "INSERT INTO instances (run_id, instance, step, state, position) "
                "VALUES (?,?,?,?,?)",
                [(run.id, iid, step, PENDING, n) for n, (iid, step) in enumerate(instances)],
            )

    def add_instances(self, run_id: str, instances: Sequence[tuple[str, str]]) -> None:
        """More pending instances of a run (work handed over while it goes on)."""
        with self.transaction():
            (first,) = self.db.execute(
                "SELECT COUNT(*) FROM instances WHERE run_id=?", (run_id,)
            ).fetchone()
            self.db.executemany(
                "INSERT INTO instances (run_id, instance, step, state, position) "
                "VALUES (?,?,?,?,?)",
                [
                    (run_id, iid, step, PENDING, first + n)
                    for n, (iid, step) in enumerate(instances)
                ],
            )

    def cpus_used(
        self, usage_key: str, cpus: float, *, last: int = 5, shortest: float = 0.5
    ) -> float | None:
        """The CPUs that work with ``usage_key`` and a limit of ``cpus`` used (CPU time over
        wall time): the most of its last ``last`` successful attempts that ran ``shortest``
        seconds or more (shorter ones say more about the container's start than the work)
        and whose reservation did not come from this history (what was measured while
        packed by it would shrink the next reservation, and that the next); None when
        there are none, or their use could not be read."""
        row = self.db.execute(
            "SELECT MAX(rate) FROM (SELECT cpu_seconds / (ended_at - started_at) AS rate "
            "FROM attempts WHERE usage_key = ? AND cpus = ? AND state = ? "
            "AND cpu_seconds IS NOT NULL AND ended_at - started_at >= ? "
            "AND (reserved_from IS NULL OR reserved_from != 'history') "
            "ORDER BY ended_at DESC LIMIT ?)",
            (usage_key, cpus, AttemptState.SUCCEEDED.value, shortest, last),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def cached_exit_code(self, key: str) -> int | None:
        """The exit status of the attempt whose output the cache holds for ``key``."""
        row = self.db.execute(
            "SELECT a.exit_code FROM cache c JOIN attempts a "
            "ON a.run_id = c.run_id AND a.instance = c.instance "
            "WHERE c.key = ? AND a.state = ? ORDER BY a.number DESC LIMIT 1",
            (key, AttemptState.SUCCEEDED.value),
        ).fetchone()
        return None if row is None else row[0]

    def set_run_images(self, run_id: str, images: str, packages: str) -> None:
        """The images a run used, as JSON (for a run fed work as it went: known at its end)."""
        self.db.execute(
            "UPDATE runs SET images=?, image_packages=? WHERE id=?", (images, packages, run_id)
        )

    def finish_run(self, run_id: str, state: str, ended_at: float, message: str | None) -> None:
        self.db.execute(
            "UPDATE runs SET state=?, ended_at=?, message=? WHERE id=?",
            (state, ended_at, message, run_id),
        )

    def update_instances(
        self, run_id: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Set ``columns`` of many instances: each row is the values, then the instance."""
        self._update("instances", ("instance",), run_id, columns, rows)

    def insert_attempts(
        self,
        run_id: str,
        rows: Sequence[
            tuple[str, int, float, int, float, str, str, str | None, float | None, str | None]
        ],
    ) -> None:
        """Attempts that started: (instance, number, cpus, memory, started_at, log path,
        node, usage key, reserved CPUs, what those were worked out from)."""
        self.db.executemany(
            "INSERT INTO attempts (run_id, instance, number, state, cpus, memory, started_at,"
            " log_path, node, usage_key, reserved_cpus, reserved_from)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(run_id, *row[:2], AttemptState.RUNNING.value, *row[2:]) for row in rows],
        )

    def update_attempts(
        self, run_id: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Set ``columns`` of many attempts: each row is the values, the instance, the number."""
        self._update("attempts", ("instance", "number"), run_id, columns, rows)

    def _update(
        self,
        table: str,
        keys: Sequence[str],
        run_id: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        assignments = ", ".join(f"{c}=?" for c in columns)
        where = " AND ".join(f"{k}=?" for k in (*keys, "run_id"))
        self.db.executemany(
            f"UPDATE {table} SET {assignments} WHERE {where}", [(*row, run_id) for row in rows]
        )

    def record_outputs(self, rows: Sequence[tuple[str, str, int, int, float]]) -> None:
        """Committed outputs: (digest, where, bytes, files, when); known ones stay as they are."""
        self.db.executemany("INSERT OR IGNORE INTO outputs VALUES (?,?,?,?,?)", rows)

    def put_cache_entries(
        self, rows: Sequence[tuple[str, str, str, str, float, Mapping[str, str] | None]]
    ) -> None:
        """Cache entries: (key, output digest, run, instance, when, what it left in volumes)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO cache VALUES (?,?,?,?,?,?)",
            [(*row[:5], json.dumps(dict(row[5])) if row[5] else None) for row in rows],
        )

    def add_events(
        self, run_id: str, rows: Sequence[tuple[float, str, str | None, dict[str, Any] | None]]
    ) -> None:
        """Record many events at once: (at, kind, instance, detail)."""
        self.db.executemany(
            "INSERT INTO events (run_id, at, kind, instance, detail) VALUES (?,?,?,?,?)",
            [
                (run_id, at, kind, instance, _ENCODE(detail) if detail else None)
                for at, kind, instance, detail in rows
            ],
        )

    def cache_entries(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """What the cache holds for each of ``keys`` (those it has). Many keys: one scan of
        the table, filtered here — an index lookup per key costs SQLite ten times more."""
        wanted = set(keys)
        if len(wanted) > 1000:
            rows = self.db.execute("SELECT key, output, volumes FROM cache")
        else:
            marks = ",".join("?" * len(wanted))
            rows = self.db.execute(
                f"SELECT key, output, volumes FROM cache WHERE key IN ({marks})", list(wanted)
            )
        return {
            key: CacheEntry(output, json.loads(volumes) if volumes else {})
            for key, output, volumes in rows
            if key in wanted
        }

    def file_hashes(self) -> dict[str, tuple[int, int, int, str]]:
        """Every kept file digest by path: (size, mtime_ns, inode, digest)."""
        rows = self.db.execute("SELECT path, size, mtime_ns, inode, digest FROM file_hashes")
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows}

    def put_file_hashes(self, rows: Sequence[tuple[str, int, int, int, str]]) -> None:
        if rows:
            with self.transaction():
                self.db.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?,?,?,?,?)", rows)

    def unfinished_runs(self) -> list[RunRow]:
        rows = self.db.execute(
            "SELECT * FROM runs WHERE state=? ORDER BY started_at", (RunState.RUNNING.value,)
        )
        return [RunRow(*r) for r in rows]

    def mark_interrupted(self, run_id: str, at: float, message: str) -> None:
        """A run found running without a living process ends, and what it left running or
        waiting with it, as the lifecycles say."""
        run = advance(RUN, RunState.RUNNING, RunEvent.FOUND_DEAD)
        attempt = advance(ATTEMPT, AttemptState.RUNNING, AttemptEvent.RUN_STOPPED)
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET state=?, ended_at=?, message=? WHERE id=?",
                (run.value, at, message, run_id),
            )
            for before in (Phase.PENDING, Phase.RUNNING):
                after = advance(INSTANCE, before, InstanceEvent.RUN_STOPPED)
                self.db.execute(
                    "UPDATE instances SET state=? WHERE run_id=? AND state=?",
                    (after.value, run_id, before.value),
                )
            self.db.execute(
                "UPDATE attempts SET state=?, ended_at=? WHERE run_id=? AND state=?",
                (attempt.value, at, run_id, AttemptState.RUNNING.value),
            )

    def event(
        self,
        run_id: str,
        at: float,
        kind: str,
        instance: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO events (run_id, at, kind, instance, detail) VALUES (?,?,?,?,?)",
            (run_id, at, kind, instance, json.dumps(detail) if detail else None),
        )

    # -- reads ----------------------------------------------------------------------------------

    def run(self, run_id: str | None = None) -> RunRow:
        if run_id is None:
            row = self.db.execute("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 1")
            found = row.fetchone()
            if found is None:
                raise UnknownReference(
                    f"this pipeline has not been run yet (no runs in {self.path.parent})"
                )
        else:
            found = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if found is None:
                raise UnknownReference(f"no run {run_id!r} in {self.path.parent}")
        return RunRow(*found)

    def runs(self) -> list[RunRow]:
        return [RunRow(*r) for r in self.db.execute("SELECT * FROM runs ORDER BY started_at")]

    def instances(self, run_id: str) -> list[InstanceRow]:
        rows = self.db.execute(
            "SELECT instance, step, state, attempts, output, cached, reason FROM instances "
            "WHERE run_id=? ORDER BY position",
            (run_id,),
        )
        return [InstanceRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def attempts(self, run_id: str, instance: str | None = None) -> list[AttemptRow]:
        query = (
            "SELECT instance, number, container_id, state, exit_code, reason, detail, cpus,"
            " memory, started_at, ended_at, log_path, cpu_seconds, peak_memory, io_read,"
            " io_write, node, reserved_cpus FROM attempts WHERE run_id=?"
        )
        args: tuple[str, ...] = (run_id,)
        if instance is not None:
            query += " AND instance=?"
            args = (run_id, instance)
        return [AttemptRow(*r) for r in self.db.execute(query + " ORDER BY started_at", args)]

    def output_path(self, digest: str) -> str | None:
        row = self.db.execute("SELECT path FROM outputs WHERE digest=?", (digest,)).fetchone()
        return None if row is None else str(row[0])

    def events(self, run_id: str) -> list[tuple[float, str, str | None, str | None]]:
        rows = self.db.execute(
            "SELECT at, kind, instance, detail FROM events WHERE run_id=? ORDER BY id", (run_id,)
        )
        return [(float(r[0]), str(r[1]), r[2], r[3]) for r in rows]


def _statements(script: str) -> list[str]:
    """The statements of a migration, one by one (a trigger's body holds semicolons of its
    own: a statement ends where SQLite says it is complete)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements
