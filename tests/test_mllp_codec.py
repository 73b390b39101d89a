"""The MLLP codec (node/mllp.py) on real socket pairs: frames split anywhere, several in one read,
a frame without its start mark, an end that never comes, a peer that hangs up mid-message."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import pytest

from node.mllp import END, START, MessageTooLong, MllpReader, frame, unframe

ORDER = "MSH|^~\\&|RIS|HOSP|QOQNODE|RAD|20260101||ORM^O01|O1|P|2.5.1\rPID|1||SYN-1"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of sockets: (sender, receiver)."""
    sender, receiver = socket.socketpair()
    receiver.settimeout(5)
    with sender, receiver:
        yield sender, receiver


def test_frame_and_unframe_are_inverse() -> None:
    framed = frame(ORDER)
    assert framed == START + ORDER.encode() + END
    assert unframe(framed[: -len(END)]) == ORDER.encode()
    assert frame("Größe") == START + "Größe".encode() + END


def test_a_block_without_its_start_mark_is_all_message() -> None:
    assert unframe(b"MSH|x") == b"MSH|x"
    assert unframe(b"noise" + START + b"MSH|x") == b"MSH|x"


def test_a_frame_sent_a_byte_at_a_time_is_read_whole(pair) -> None:
    """Partial frames, the end mark itself split across two reads."""
    sender, receiver = pair
    reads: list[int] = []

    def recv(size: int) -> bytes:
        chunk = receiver.recv(1)
        reads.append(len(chunk))
        return chunk

    framed = frame(ORDER)
    for byte in framed:
        sender.sendall(bytes([byte]))
    assert MllpReader(recv, 1_000_000).read() == ORDER.encode()
    assert len(reads) == len(framed)


def test_two_messages_in_one_read_are_both_returned_in_order(pair) -> None:
    sender, receiver = pair
    sender.sendall(frame("first") + frame("second") + START + b"thi")
    reader = MllpReader(receiver.recv, 1_000_000)
    assert reader.read() == b"first"
    assert reader.read() == b"second"
    sender.sendall(b"rd" + END)
    assert reader.read() == b"third"


def test_more_than_the_limit_without_an_end_is_refused(pair) -> None:
    sender, receiver = pair
    sender.sendall(START + b"x" * 5000)
    with pytest.raises(MessageTooLong):
        MllpReader(receiver.recv, 2048).read()


def test_a_complete_message_over_the_limit_is_returned_for_the_caller_to_judge(pair) -> None:
    """Its end arrived with it: the reader is past it, so the connection can go on."""
    sender, receiver = pair
    sender.sendall(frame("x" * 3000) + frame("next"))
    reader = MllpReader(receiver.recv, 2048)
    assert len(reader.read()) == 3000
    assert reader.read() == b"next"


def test_a_peer_that_hangs_up_before_the_end_gives_none(pair) -> None:
    sender, receiver = pair
    sender.sendall(START + b"MSH|half a message")
    sender.shutdown(socket.SHUT_WR)
    reader = MllpReader(receiver.recv, 1_000_000)
    assert reader.read() is None
    assert reader.read() is None


def test_silence_raises_the_connection_s_timeout(pair) -> None:
    _, receiver = pair
    receiver.settimeout(0.2)
    with pytest.raises(TimeoutError):
        MllpReader(receiver.recv, 1_000_000).read()


def test_a_stream_is_read_like_a_socket() -> None:
    stream = io.BufferedReader(io.BytesIO(frame("one") + frame("two") + START + b"cut"))
    reader = MllpReader(stream.read1, 1_000_000)
    assert [reader.read(), reader.read(), reader.read()] == [b"one", b"two", None]
