"""The state store's schema: ``MIGRATIONS[n]`` upgrades a database from version ``n`` to
``n + 1``; ``PRAGMA user_version`` holds the version (see :mod:`dockyard.state.store`)."""

from __future__ import annotations

from collections.abc import Sequence

MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        spec_sha256 TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        pool_cpus REAL NOT NULL,
        pool_memory INTEGER NOT NULL,
        message TEXT
    );
    CREATE TABLE instances (
        run_id TEXT NOT NULL REFERENCES runs(id),
        instance TEXT NOT NULL,
        step TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        output TEXT REFERENCES outputs(digest),
        cached INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        position INTEGER NOT NULL,
        PRIMARY KEY (run_id, instance)
    );
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        instance TEXT NOT NULL,
        number INTEGER NOT NULL,
        container_id TEXT,
        state TEXT NOT NULL,
        exit_code INTEGER,
        reason TEXT,
        detail TEXT,
        cpus REAL NOT NULL,
        memory INTEGER NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        log_path TEXT,
        PRIMARY KEY (run_id, instance, number)
    );
    CREATE TABLE outputs (
        digest TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        files INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        instance TEXT,
        detail TEXT
    );
    CREATE INDEX events_by_run ON events (run_id, id);
    """,
    # 2: the cache index, input stat cache, and each instance's cache key.
    """
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        output TEXT NOT NULL REFERENCES outputs(digest),
        run_id TEXT NOT NULL,
        instance TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE file_hashes (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        digest TEXT NOT NULL
    );
    ALTER TABLE instances ADD COLUMN cache_key TEXT;
    """,
    # 3: what each attempt used, from its cgroup (None where it could not be read).
    """
    ALTER TABLE attempts ADD COLUMN cpu_seconds REAL;
    ALTER TABLE attempts ADD COLUMN peak_memory INTEGER;
    ALTER TABLE attempts ADD COLUMN io_read INTEGER;
    ALTER TABLE attempts ADD COLUMN io_write INTEGER;
    """,
    # 4: the images a run used (JSON: reference -> content digest), for reproducibility.
    """
    ALTER TABLE runs ADD COLUMN images TEXT;
    """,
    # 5: what a cached step left in the volumes it writes (JSON: volume -> tree digest);
    # the entry holds only while they still hold that.
    """
    ALTER TABLE cache ADD COLUMN volumes TEXT;
    """,
    # 6: the versions of the packages installed in images made from Debian packages
    # (JSON: image reference -> "bwa=0.7.17-7+b2 ..."): which tools made the results.
    """
    ALTER TABLE runs ADD COLUMN image_packages TEXT;
    """,
    # 7: the node each attempt ran on (a Swarm node id; "local" on one engine).
    """
    ALTER TABLE attempts ADD COLUMN node TEXT;
    """,
    # 8: files are hashed by chunks now (disk.content_digest): the digests kept are not.
    """
    DELETE FROM file_hashes;
    """,
    # 9: the state columns hold only the states of their lifecycle (dockyard.lifecycles;
    # a test holds these lists to its enums: a new state is a new migration).
    """
    CREATE TRIGGER runs_state_insert BEFORE INSERT ON runs
    WHEN NEW.state NOT IN ('running', 'succeeded', 'failed', 'interrupted')
    BEGIN SELECT RAISE(ABORT, 'runs.state: not a run state'); END;
    CREATE TRIGGER runs_state_update BEFORE UPDATE OF state ON runs
    WHEN NEW.state NOT IN ('running', 'succeeded', 'failed', 'interrupted')
    BEGIN SELECT RAISE(ABORT, 'runs.state: not a run state'); END;
    CREATE TRIGGER instances_state_insert BEFORE INSERT ON instances
    WHEN NEW.state NOT IN ('pending', 'running', 'succeeded', 'failed', 'blocked', 'interrupted')
    BEGIN SELECT RAISE(ABORT, 'instances.state: not an instance state'); END;
    CREATE TRIGGER instances_state_update BEFORE UPDATE OF state ON instances
    WHEN NEW.state NOT IN ('pending', 'running', 'succeeded', 'failed', 'blocked', 'interrupted')
    BEGIN SELECT RAISE(ABORT, 'instances.state: not an instance state'); END;
    CREATE TRIGGER attempts_state_insert BEFORE INSERT ON attempts
    WHEN NEW.state NOT IN ('running', 'succeeded', 'failed', 'lost', 'interrupted')
    BEGIN SELECT RAISE(ABORT, 'attempts.state: not an attempt state'); END;
    CREATE TRIGGER attempts_state_update BEFORE UPDATE OF state ON attempts
    WHEN NEW.state NOT IN ('running', 'succeeded', 'failed', 'lost', 'interrupted')
    BEGIN SELECT RAISE(ABORT, 'attempts.state: not an attempt state'); END;
    """,
    # 10: the parameters a run had (JSON: name -> value: the file's defaults, the params
    # file's and each --param), for reproducibility.
    """
    ALTER TABLE runs ADD COLUMN params TEXT;
    """,
    # 11: what an attempt runs alike with (planning.packing: the step, its image and
    # command before interpolation) and the CPUs it took from the pool, where that was
    # less than its declared cpus (its limit): what it used tells the next run.
    """
    ALTER TABLE attempts ADD COLUMN usage_key TEXT;
    ALTER TABLE attempts ADD COLUMN reserved_cpus REAL;
    ALTER TABLE attempts ADD COLUMN reserved_from TEXT;
    CREATE INDEX attempts_by_usage ON attempts (usage_key, ended_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]
