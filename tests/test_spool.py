"""The spool's file handling: new files in place, existing ones replaced whole, crash leftovers swept."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.ingest.spool import Spool


def _received(spool: Spool, data: bytes) -> Path:
    """A file as an instance is received: under the spool's tmp/."""
    path = spool.temporary_path()
    path.write_bytes(data)
    return path


def test_a_received_instance_is_moved_into_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.keep(_received(spool, b"metadataset"), "1.2.3", "1.2.3.4")
    spool.sync(path)
    assert path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    assert path.read_bytes() == b"metadataset"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_received_instance_held_in_memory_is_written_in_place(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.keep(bytearray(b"metadataset"), "1.2.3", "1.2.3.4")
    assert path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm" and path.read_bytes() == b"metadataset"
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("in_memory", [True, False])
def test_partial_file_from_a_crash_is_replaced_whole(tmp_path: Path, in_memory: bool) -> None:
    spool = Spool(tmp_path)
    torn = tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"half of an ins")  # written before a crash; never acknowledged
    received = bytearray(b"whole instance") if in_memory else _received(spool, b"whole instance")
    assert spool.keep(received, "1.2.3", "1.2.3.4").read_bytes() == b"whole instance"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_leftovers_in_tmp_are_swept_at_start(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir(parents=True)
    (tmp_path / "tmp" / "123-456-0").write_bytes(b"torn")
    spool = Spool(tmp_path)
    assert spool.partial_writes_removed == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_quarantine_keeps_the_object_and_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    kept = spool.quarantine(b"metabad", "malformed", {"detail": "truncated"})
    assert kept.read_bytes() == b"metabad"
    assert '"reason": "malformed"' in kept.with_suffix(".json").read_text()
    moved = spool.quarantine(_received(spool, b"metatoo-large"), "too_large", {"detail": "over"})
    assert moved.read_bytes() == b"metatoo-large" and list((tmp_path / "tmp").iterdir()) == []
    assert '"reason": "too_large"' in moved.with_suffix(".json").read_text()
