"""The spool's file handling: new files in place, existing ones replaced whole, crash leftovers swept."""

from __future__ import annotations

from pathlib import Path

from node.ingest.spool import Spool


def test_new_instance_is_written_in_place(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.write("1.2.3", "1.2.3.4", (b"meta", b"dataset"))
    spool.sync(path)
    assert path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    assert path.read_bytes() == b"metadataset"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_partial_file_from_a_crash_is_replaced_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    torn = tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"half of an ins")  # written before a crash; never acknowledged
    assert spool.write("1.2.3", "1.2.3.4", (b"whole ", b"instance")).read_bytes() == b"whole instance"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_leftovers_in_tmp_are_swept_at_start(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir(parents=True)
    (tmp_path / "tmp" / "123-456-0").write_bytes(b"torn")
    spool = Spool(tmp_path)
    assert spool.partial_writes_removed == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_quarantine_keeps_the_object_and_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    kept = spool.quarantine((b"meta", b"bad"), "malformed", {"detail": "truncated"})
    assert kept.read_bytes() == b"metabad"
    assert '"reason": "malformed"' in kept.with_suffix(".json").read_text()
