"""The durable outbox: idempotent queueing, due order, backoff with a cap, dead letters, retry, restart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from node.egress.mllp import Delivery
from node.egress.outbox import backoff_seconds, next_state
from node.store import DEAD, PENDING, SENT, Store
from tests.helpers import REPO, qoq_node


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_seconds(n, base=2, cap=60, rng=rng) for n in range(1, 10)]
    for attempts, delay in enumerate(delays, start=1):
        full = min(60, 2 * 2 ** (attempts - 1))
        assert full / 2 <= delay <= full
    assert max(delays) <= 60 and len(set(delays)) == len(delays)


def test_next_state() -> None:
    rng = random.Random(0)
    assert next_state(Delivery.ACCEPTED, 1, 100, 2, 60, rng) == (SENT, 100)
    assert next_state(Delivery.REJECTED, 1, 100, 2, 60, rng) == (DEAD, 100)
    state, at = next_state(Delivery.RETRY, 3, 100, 2, 60, rng)
    assert state == PENDING and 104 <= at <= 108


def test_outbox_lifecycle_survives_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert store.outbox.enqueue("pacs", "dicom", "1.2.3.1", "results/sr.dcm", "1.2.3", now=10)
    assert not store.outbox.enqueue("pacs", "dicom", "1.2.3.1", "results/sr.dcm", "1.2.3", now=11)  # same key: once
    assert store.outbox.enqueue("ehr", "hl7", "QOQ1", "results/oru.hl7", "1.2.3", now=12)
    [item] = store.outbox.due("pacs", now=10)
    store.outbox.record_attempt(item.id, PENDING, "association failed", now=10, next_attempt_at=20)
    assert store.outbox.due("pacs", now=15) == []  # backing off: not due yet
    assert [i.key for i in store.outbox.due("ehr", now=15)] == ["QOQ1"]  # one dead destination blocks no other
    store.close()
    reopened = Store(tmp_path / "state.db")
    [again] = reopened.outbox.due("pacs", now=20)
    assert (again.attempts, again.last_error) == (1, "association failed")
    reopened.outbox.record_attempt(again.id, DEAD, "failed with status 0xC211", now=20, next_attempt_at=20)
    [dead] = reopened.outbox.items(DEAD)
    assert dead.key == "1.2.3.1"
    assert reopened.outbox.retry(now=30, item_id=dead.id) == 1  # an operator retries it
    assert [i.key for i in reopened.outbox.due("pacs", now=30)] == ["1.2.3.1"]
    [ehr_item] = reopened.outbox.due("ehr", now=30)
    reopened.outbox.record_attempt(ehr_item.id, SENT, "", now=31, next_attempt_at=31)
    assert reopened.outbox.retry(now=40) == 1  # retry-all leaves delivered items alone
    assert reopened.outbox.retry(now=41, item_id=ehr_item.id) == 0  # so does retrying a delivered one by its ID
    assert {i.state for i in reopened.outbox.items()} == {PENDING, SENT}


@pytest.mark.slow  # several seconds: qoq-node as child processes
def test_outbox_command_lists_and_retries(tmp_path: Path) -> None:
    import json
    import os
    import shlex
    import subprocess
    import sys

    store = Store(tmp_path / "state.db")
    store.outbox.enqueue("pacs", "dicom", "1.2.3.1", "results/sr.dcm", "1.2.3", now=10)
    [item] = store.outbox.due("pacs", now=10)
    store.outbox.record_attempt(item.id, DEAD, "failed with status 0xC211", now=10, next_attempt_at=10)
    for number in range(1500):  # delivered ones: more lines than a pipe holds
        store.outbox.enqueue("ehr", "hl7", f"QOQ{number}", "results/oru.hl7", "1.2.3", now=11)
    for sent in store.outbox.due("ehr", now=11, limit=2000):
        store.outbox.record_attempt(sent.id, SENT, "AA accepted", now=12, next_attempt_at=12)
    store.close()
    env = {"QOQ_NODE__STORAGE__ROOT": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return qoq_node("outbox", *args, env=env, check=False)

    listing = run("list", "--state", "dead", "--json")
    assert listing.returncode == 0, listing.stderr
    [dead] = json.loads(listing.stdout)
    assert (dead["key"], dead["last_error"]) == ("1.2.3.1", "failed with status 0xC211")
    table = run("list").stdout
    assert "0xC211" in table and table.splitlines()[0].endswith("LAST RESULT")  # "AA accepted" is no error
    assert run("retry").returncode == 1
    missing = run("retry", "99999")
    assert missing.returncode == 1 and "outbox item 99999 does not exist" in missing.stderr
    delivered = run("retry", str(sent.id))
    assert delivered.returncode == 1 and "was delivered already (AA accepted)" in delivered.stderr
    assert "due now" not in delivered.stdout
    head = subprocess.run(f"{shlex.quote(sys.executable)} -m node outbox list | head -3", shell=True, cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert len(head.stdout.splitlines()) == 3 and "Traceback" not in head.stderr and "BrokenPipe" not in head.stderr
    retried = run("retry", str(dead["id"]))
    assert retried.returncode == 0 and "1 outbox item(s) due now" in retried.stdout
    assert [item["state"] for item in json.loads(run("list", "--json").stdout) if item["id"] == dead["id"]] == [PENDING]
