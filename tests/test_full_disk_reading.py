"""A full disk while a study is read is the node's fault, not the study's: the scheduler waits it out,
5 s doubling to 60 s, instead of trying again at every poll (issue 26, item 9: 89 logged errors in 15 s)."""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

import pytest

import node.scheduler
from node.backoff import FIRST_WAIT_SECONDS
from node.store import COMPLETE
from node.testing.synthetic import write_ct_study
from tests.helpers import wait_for


@pytest.mark.slow  # the node waits its first 5 s
@pytest.mark.parametrize("full", ["results", "database"])
def test_a_full_disk_while_reading_is_waited_out_not_retried_at_every_poll(make_node, storescu, monkeypatch,
                                                                           tmp_path: Path, full: str) -> None:
    """Once: the results cannot be written (ENOSPC), or a results bug's failure cannot be recorded (the
    database is full). The next try comes after the first wait, not at the next poll or the study's own
    0.05 s retry; the study keeps its attempts, and once there is room it is read."""
    tries: list[float] = []
    real = node.scheduler.write_results

    def writes(*args: object, **kwargs: object) -> object:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise OSError(errno.ENOSPC, "No space left on device") if full == "results" else RuntimeError("bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(node.scheduler, "write_results", writes)
    reader = make_node(pipeline={"max_attempts": 2, "retry_seconds": 0.05})
    if full == "database":
        record = reader.store.studies.fail_attempt

        def database_full(*args: object, **kwargs: object) -> object:
            reader.store.studies.fail_attempt = record  # type: ignore[method-assign]
            raise sqlite3.OperationalError("database or disk is full")
        monkeypatch.setattr(reader.store.studies, "fail_attempt", database_full)
    ct = write_ct_study(tmp_path / "ct", slices=1, size=64)
    assert storescu(reader.scp.port, [ct.files[0]]).returncode == 0
    wait_for(lambda: any(s.state == COMPLETE for s in reader.store.studies.summaries()), timeout=60)
    assert len(tries) == 2 and tries[1] - tries[0] >= FIRST_WAIT_SECONDS - 0.5, tries
    [study] = reader.store.studies.summaries()
    assert study.attempts == 0  # the disk's fault cost the study no attempt
