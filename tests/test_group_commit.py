"""Group commit of instance rows: rows arriving together share one transaction, every waiter gets
its own study update (or the commit's error), and stopping commits what was submitted."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from node.ingest.commits import GroupCommit
from node.store import InstanceRecord, Store
from tests.helpers import instance_record


def _counting_transactions(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch the store commits."""
    batches: list[int] = []
    record_instances = store.instances.record

    def counted(records: list[InstanceRecord]):
        batches.append(len(records))
        return record_instances(records)

    monkeypatch.setattr(store.instances, "record", counted)
    return batches


def test_rows_that_arrive_while_a_commit_runs_share_the_next_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "state.db")
    batches = _counting_transactions(store, monkeypatch)
    commits = GroupCommit(store)
    with store.database.lock:  # the database is busy: the first row's commit waits, the rest queue up behind it
        first = commits.submit(instance_record("1.0"))
        while not batches:
            threading.Event().wait(0.001)
        rest = [commits.submit(instance_record(f"1.{n}")) for n in range(1, 10)]
    updates = [future.result(timeout=10) for future in (first, *rest)]
    assert batches == [1, 9]
    assert all(update.stored for update in updates)
    assert [update.new_version for update in updates] == [True] + [False] * 9  # in order, within one study
    assert [s.instances for s in store.studies.summaries()] == [10]
    commits.stop()


def test_a_duplicate_in_a_batch_is_reported_as_not_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    commits = GroupCommit(store)
    assert commits.submit(instance_record("1.1")).result(timeout=10).stored
    assert not commits.submit(instance_record("1.1")).result(timeout=10).stored
    commits.stop()


def test_a_failed_commit_reaches_every_waiter(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    commits = GroupCommit(store)
    store.close()  # every statement now fails
    with pytest.raises(sqlite3.ProgrammingError):
        commits.submit(instance_record("1.1")).result(timeout=10)
    commits.stop()


def test_stop_commits_what_was_submitted_and_refuses_more(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    commits = GroupCommit(store)
    pending = [commits.submit(instance_record(f"1.{n}")) for n in range(20)]
    commits.stop()
    assert all(future.done() and future.result().stored for future in pending)
    with pytest.raises(RuntimeError, match="stopped"):
        commits.submit(instance_record("1.99"))


def test_forget_instances_drops_a_study_left_empty(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.instances.record([instance_record("1.1"), instance_record("1.2"), instance_record("2.1", study="2.3")])
    store.instances.forget(["1.1", "2.1"])
    assert [(s.study_uid, s.instances) for s in store.studies.summaries()] == [("1.2.3", 1)]
    assert store.instances.stored("1.2").size == 10 and store.instances.stored("1.1") is None
