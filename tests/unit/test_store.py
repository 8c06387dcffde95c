from __future__ import annotations

import enum
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.errors import StoreError, UnknownReference
from dockyard.lifecycles import AttemptState, Phase, RunState
from dockyard.state.rows import RunRow
from dockyard.state.store import SCHEMA_VERSION, Store


def make_run(store: Store, run_id: str = "r1", started: float = 1.0) -> None:
    store.create_run(
        RunRow(run_id, "p", "sha", "running", started, None, 2.0, 1024, None),
        [("a", "a"), ("b[x]", "b")],
    )


def test_new_store_is_at_the_current_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert store.version == SCHEMA_VERSION
    store.close()


def test_reopening_keeps_data(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    make_run(store)
    store.close()
    again = Store(tmp_path / "state.db")
    assert [r.instance for r in again.instances("r1")] == ["a", "b[x]"]
    again.close()


def test_store_from_a_newer_dockyard_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="unusable"):
        Store(path)


def test_latest_run_is_the_default(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    make_run(store, "old", 1.0)
    make_run(store, "new", 2.0)
    assert store.run().id == "new"
    assert store.run("old").id == "old"
    with pytest.raises(UnknownReference):
        store.run("missing")
    store.close()


def test_no_runs_yet_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with pytest.raises(UnknownReference, match="not been run"):
        store.run()
    store.close()


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    make_run(store)
    with pytest.raises(RuntimeError), store.transaction():
        store.update_instances("r1", ("state",), [("succeeded", "a")])
        raise RuntimeError("crash between writes")
    assert store.instances("r1")[0].state == "pending"
    store.close()


def test_version_1_database_is_migrated_keeping_its_runs(tmp_path: Path) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "state-v1.db"
    path = tmp_path / "state.db"
    path.write_bytes(fixture.read_bytes())
    store = Store(path)
    assert store.version == SCHEMA_VERSION
    run = store.run()
    assert (run.id, run.state) == ("20261127-000000-abcdef", "succeeded")
    assert [a.exit_code for a in store.attempts(run.id, "greet")] == [0]
    assert store.cache_entries(["no-such-key"]) == {}
    store.close()


@pytest.mark.parametrize(
    ("table", "write"),
    [
        ("runs", lambda s: s.finish_run("r1", "done", 2.0, None)),
        ("instances", lambda s: s.update_instances("r1", ("state",), [("done", "a")])),
        ("attempts", lambda s: s.update_attempts("r1", ("state",), [("done", "a", 1)])),
    ],
)
def test_a_state_outside_its_lifecycle_is_refused_by_the_database(
    tmp_path: Path, table: str, write: Callable[[Store], None]
) -> None:
    store = Store(tmp_path / "state.db")
    make_run(store)
    store.insert_attempts("r1", [("a", 1, 1.0, 64, 1.0, "a.log", "local", None, None, None)])
    with pytest.raises(sqlite3.IntegrityError, match=f"{table}.state: not"), store.transaction():
        write(store)
    store.close()


def test_the_schema_s_states_are_the_lifecycles_states(tmp_path: Path) -> None:
    """A state added to a lifecycle needs a migration that lets the database hold it."""
    store = Store(tmp_path / "state.db")
    lifecycles: dict[str, type[enum.StrEnum]] = {
        "runs": RunState,
        "instances": Phase,
        "attempts": AttemptState,
    }
    seen = set()
    for name, sql in store.db.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger'"):
        table = name.split("_state_")[0]
        listed = sql.split("NOT IN", 1)[1].split(")", 1)[0]
        states = {state.value for state in lifecycles[table]}
        assert set(re.findall(r"'([a-z-]+)'", listed)) == states, name
        seen.add(name)
    assert seen == {
        f"{table}_state_{when}" for table in lifecycles for when in ("insert", "update")
    }
    store.close()
