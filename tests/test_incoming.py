"""A C-STORE's dataset received into a file as its fragments arrive: limits checked as it comes, a deflated
dataset inflated once, within its limit, and nothing held whole in memory."""

from __future__ import annotations

import contextlib
import random
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.ingest.incoming import (
    INFLATE_STEP_BYTES,
    ROOM_CHECK_BYTES,
    SPILL_BYTES,
    IncomingDataset,
    IncomingLimits,
)
from tests.helpers import PYDICOM_TEST_FILES, dataset_bytes

DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT = "1.2.840.10008.1.2.1"
META = b"M" * 16
UNLIMITED = IncomingLimits(1 << 40, 1 << 40)


def _incoming(tmp_path: Path, syntax: str = EXPLICIT, limits: IncomingLimits = UNLIMITED,
              room: list[bool] | None = None) -> IncomingDataset:
    room = [True] if room is None else room
    return IncomingDataset(tmp_path / "received", META, syntax, limits, lambda: room[0])


def _fragments(data: bytes, size: int) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


def test_a_small_dataset_is_kept_in_memory(tmp_path: Path) -> None:
    incoming = _incoming(tmp_path)
    incoming.write(b"first ")
    incoming.write(b"second")
    incoming.close()
    with incoming.dataset() as dataset:
        assert bytes(dataset) == b"first second"
    assert incoming.received() == META + b"first second" and not incoming.path.exists()
    assert (incoming.received_bytes, incoming.stored_bytes, incoming.spilled) == (12, len(META) + 12, False)


def test_past_spill_bytes_each_fragment_goes_to_the_file_as_it_arrives(tmp_path: Path) -> None:
    fragment = b"y" * (SPILL_BYTES // 3)
    incoming = _incoming(tmp_path)
    for _ in range(4):
        incoming.write(fragment)
    assert incoming.spilled and incoming.path.stat().st_size == len(META) + 4 * len(fragment)
    incoming.write(b"last")
    assert incoming.path.stat().st_size == len(META) + 4 * len(fragment) + 4  # on disk before the next comes
    incoming.close()
    assert incoming.received() == incoming.path
    with incoming.dataset() as dataset:
        assert len(dataset) == 4 * len(fragment) + 4 and bytes(dataset[-4:]) == b"last"
    incoming.discard()
    assert not incoming.path.exists()


def test_past_max_instance_bytes_what_was_written_goes_at_once_and_the_rest_is_only_counted(tmp_path: Path) -> None:
    limit = 2 * SPILL_BYTES
    incoming = _incoming(tmp_path, limits=IncomingLimits(max_encoded_bytes=limit, max_inflated_bytes=1 << 40))
    incoming.write(b"x" * (limit // 2 + 1))
    assert incoming.path.exists()
    incoming.write(b"x" * (limit // 2 + 1))
    assert not incoming.path.exists()  # not at the end of the request: at the fragment that passed the limit
    assert incoming.refusal is not None and incoming.refusal.reason == "too_large"
    assert "dicom.max_instance_bytes" in incoming.refusal.detail
    incoming.write(b"x" * 600)
    incoming.close()
    assert incoming.received_bytes == limit + 602 and not incoming.path.exists()


def test_a_deflated_dataset_is_inflated_as_it_arrives_and_kept_in_its_undeflated_twin(tmp_path: Path) -> None:
    deflated = dataset_bytes(PYDICOM_TEST_FILES / "image_dfl.dcm")
    incoming = _incoming(tmp_path, DEFLATED)
    for fragment in _fragments(deflated, 997):
        incoming.write(fragment)
    incoming.close()
    assert incoming.kept and incoming.transfer_syntax_uid == EXPLICIT and incoming.received_syntax == DEFLATED
    with incoming.dataset() as dataset:
        assert bytes(dataset) == zlib.decompress(deflated, -zlib.MAX_WBITS)
    assert incoming.received_bytes == len(deflated)


def test_a_deflate_bomb_is_stopped_as_it_inflates_in_bounded_memory(tmp_path: Path) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * 200_000_000) + compressor.flush()  # ~200 KB on the wire
    incoming = _incoming(tmp_path, DEFLATED, IncomingLimits(max_encoded_bytes=1 << 40, max_inflated_bytes=8_000_000))
    tracemalloc.start()
    try:
        incoming.write(bomb)  # one fragment that inflates to 200 MB
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert incoming.refusal is not None and incoming.refusal.reason == "too_large"
    assert "dicom.max_inflated_bytes" in incoming.refusal.detail
    assert not incoming.path.exists()
    # inflated a step at a time, held in memory up to SPILL_BYTES, then on disk: not to the limit, nor to 200 MB
    assert peak < SPILL_BYTES + 4 * INFLATE_STEP_BYTES


@pytest.mark.parametrize(("data", "detail"), [
    (zlib.compress(random.Random(0).randbytes(5000))[2:2500], "truncated"),  # a deflate stream cut short
    (b"\xff" * 64, "does not inflate"),  # not a deflate stream at all
])
def test_a_broken_deflate_stream_is_malformed(tmp_path: Path, data: bytes, detail: str) -> None:
    incoming = _incoming(tmp_path, DEFLATED)
    incoming.write(data)
    incoming.close()
    assert incoming.refusal is not None and incoming.refusal.reason == "malformed"
    assert detail in incoming.refusal.detail and not incoming.path.exists()


def test_below_the_watermark_nothing_is_written_and_a_dataset_that_reaches_it_goes(tmp_path: Path) -> None:
    full = _incoming(tmp_path, room=[False])
    full.write(b"x" * 100)
    assert full.refusal is not None and full.refusal.reason == "out_of_space" and not full.path.exists()
    room = [True]
    filling = _incoming(tmp_path, room=room)
    filling.write(b"x" * 1000)
    room[0] = False  # the disk fills while the dataset arrives: seen within ROOM_CHECK_BYTES
    for _ in range(3):
        filling.write(b"x" * (ROOM_CHECK_BYTES // 2))
    assert filling.refusal is not None and filling.refusal.reason == "out_of_space"
    assert not filling.path.exists() and filling.stored_bytes < 2 * ROOM_CHECK_BYTES  # (the last fragment)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=6))
def test_any_deflated_fragments_end_kept_or_refused_never_raising(tmp_path_factory, fragments: list[bytes]) -> None:
    incoming = _incoming(tmp_path_factory.mktemp("any"), DEFLATED, IncomingLimits(1 << 20, 1 << 16))
    for fragment in fragments:
        incoming.write(fragment)
    incoming.close()
    assert incoming.kept or incoming.refusal is not None
    with contextlib.suppress(FileNotFoundError):
        incoming.discard()
    assert not incoming.path.exists()
