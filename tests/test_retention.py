"""Retention: finished studies and quarantined objects are deleted after storage.retention_days,
unfinished ones are kept, and a purged study can be received again."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from node.ingest.spool import Spool
from node.store import COMPLETE
from node.testing.synthetic import write_cr_study
from tests.helpers import metric_value, state, wait_for

DAY = 86_400.0


def test_finished_studies_are_purged_after_retention_and_can_be_received_again(make_node, tmp_path: Path,
                                                                               storescu) -> None:
    node = make_node(storage={"retention_days": 14})
    study = write_cr_study(tmp_path / "cr", size=256)
    no_study = pydicom.dcmread(study.files[0])
    del no_study.StudyInstanceUID
    no_study.SOPInstanceUID = generate_uid()
    no_study.file_meta.MediaStorageSOPInstanceUID = no_study.SOPInstanceUID
    no_study.save_as(tmp_path / "no-study.dcm", enforce_file_format=True)
    storescu(node.scp.port, [tmp_path / "no-study.dcm"])  # refused and quarantined
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE)
    root = node.config.storage.root
    spooled = root / "spool" / study.study_uid
    results = root / "results" / study.study_uid
    assert spooled.is_dir() and results.is_dir() and len(node.store.quarantine.items()) == 1

    assert node.retention.run_once(now=time.time() + 13 * DAY) == 0  # not yet
    assert spooled.is_dir()
    assert node.retention.run_once(now=time.time() + 15 * DAY) == 1
    assert not spooled.exists() and not results.exists()
    assert node.store.studies.summaries() == [] and node.store.outbox.items() == []
    assert node.store.quarantine.items() == []
    assert not list((root / "quarantine").iterdir())
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_retention_purged_total", 'kind="study"') == 1
    assert metric_value(metrics, "qoqnode_retention_purged_total", 'kind="quarantine"') == 1

    # The PACS sends it again: it is stored and read again, not taken for a duplicate.
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE)
    assert [p.name for p in spooled.iterdir()] == [f"{pydicom.dcmread(study.files[0]).SOPInstanceUID}.dcm"]


def test_unfinished_studies_are_kept_and_zero_keeps_everything(make_node, tmp_path: Path, storescu) -> None:
    waiting = make_node(engine={"model": tmp_path / "no-such-model"})  # cannot read: studies stay stable
    study = write_cr_study(tmp_path / "cr", size=256)
    assert storescu(waiting.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(waiting, study.study_uid) == "stable")
    assert waiting.retention.run_once(now=time.time() + 365 * DAY) == 0
    assert (waiting.config.storage.root / "spool" / study.study_uid).is_dir()

    forever = make_node(storage={"retention_days": 0})
    assert storescu(forever.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(forever, study.study_uid) == COMPLETE)
    assert forever.retention.run_once(now=time.time() + 365 * DAY) == 0
    assert len(forever.store.studies.summaries()) == 1


def test_the_spool_makes_a_study_folder_again_when_retention_removed_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path)

    def keep(sop_instance_uid: str, data: bytes) -> Path:
        received = spool.temporary_path()
        received.write_bytes(data)
        return spool.keep(received, "1.2.3", sop_instance_uid)

    first = keep("1.2.3.4", b"first")
    assert spool.remove([first]) == 5 and not first.parent.exists()
    again = keep("1.2.3.5", b"again")  # the folder was known to the spool; it is made again
    assert again.read_bytes() == b"again"
    other = keep("1.2.3.6", b"x")
    assert spool.remove([again]) == 5 and other.parent.is_dir()  # a folder still holding files stays
