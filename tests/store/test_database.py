"""Opening the store: migrations run in code, SQLite is tuned, logs stay bounded."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from corral.model.operation import OperationError, OperationState
from corral.model.rpc import HostFacts
from corral.store import (
    Database,
    events,
    hosts,
    images,
    open_database,
    operations,
    pools,
    sqlite_url,
)
from corral.store.database import make_engine, migrate


def test_migrations_run_at_open_and_twice_is_harmless(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "corral.db")
    open_database(url).close()
    again = open_database(url)
    with again.transaction() as s:
        version = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
        tables = set(s.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars())
    again.close()
    assert version == "0003"
    assert {"instances", "images", "operations", "events", "hosts", "pools", "volumes"} <= tables
    assert {"snapshots", "backups", "backup_chains"} <= tables


def test_upgrading_a_0001_store_keeps_its_images_and_adds_storage(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "corral.db")
    engine = make_engine(url)
    migrate(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO images (name, state, kind, size_bytes, digest, recipe, cmdline, "
                "message, created_at, updated_at) VALUES ('tiny', 'ready', 'initramfs', 5, "
                "'d', '{}', '', '', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    db = open_database(url)
    with db.transaction() as s:
        image = images.get_image(s, "tiny")
        assert pools.list_pools(s) == []
    db.close()
    assert image.disk is None
    assert image.disk_virtual_size_bytes == 0
    assert image.cloud_init is False


def test_sqlite_runs_in_wal_mode_with_foreign_keys(db: Database) -> None:
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_event_log_keeps_only_the_newest(db: Database) -> None:
    log = events.EventLog(db, keep=10, trim_every=5)
    appended = [log.append("instance.state", "instance", "vm1", {"n": i}) for i in range(30)]
    assert [e.id for e in appended] == sorted(e.id for e in appended)
    kept = log.after(0)
    assert len(kept) <= 15
    assert kept[-1].data == {"n": 29}
    assert log.after(appended[-2].id) == [appended[-1]]


def test_operations_list_newest_first_and_finish_once(db: Database) -> None:
    with db.transaction() as s:
        first = operations.create_operation(s, "create", "instance", "a", params={"generation": 1})
        second = operations.create_operation(s, "stop", "instance", "a")
        assert [o.id for o in operations.list_operations(s)] == [second.id, first.id]
        operations.update_operation(s, first.id, progress=0.5, message="half")
        operations.update_operation(s, first.id, progress=0.2)  # never backwards
        done = operations.finish_operation(
            s, first.id, error=OperationError(code="launch_failed", message="no")
        )
        again = operations.finish_operation(s, first.id)
        running = operations.running_operations(s, "instance", "a")
    assert done.state == OperationState.FAILED
    assert done.progress == 0.5
    assert again.state == OperationState.FAILED
    assert [r.operation.id for r in running] == [second.id]


def test_finished_operations_are_trimmed_but_running_ones_stay(db: Database) -> None:
    with db.transaction() as s:
        running = operations.create_operation(s, "create", "instance", "keep")
        for _ in range(5):
            op = operations.create_operation(s, "stop", "instance", "x")
            operations.finish_operation(s, op.id)
        assert operations.trim_operations(s, keep_finished=2) == 3
        left = operations.list_operations(s)
    assert len(left) == 3
    assert running.id in {o.id for o in left}


def test_host_facts_upsert_says_when_they_changed(db: Database) -> None:
    facts = HostFacts(name="h1", cpus=2, memory_mib=1024, accel="tcg", accel_reason="test")
    with db.transaction() as s:
        assert hosts.upsert_host(s, facts)
    with db.transaction() as s:
        assert not hosts.upsert_host(s, facts)
        assert hosts.upsert_host(s, facts.model_copy(update={"cpus": 4}))
        assert hosts.get_host(s, "h1").facts.cpus == 4
