"""MLLP framing without a socket: frames in any number of pieces, a frame the sender abandons by starting
another, and an oversized frame skipped up to its end block even when that block is split across reads."""

from services.ingest.mllp import END, START, FrameReader, frame

ONE = b"MSH|^~\\&|PAS|RR8|SCR|ICS|20240301||ADT^A28^ADT_A05|M1|P|2.4\rPID|1||RR8000123^^^RR8^MR\r"
TWO = ONE.replace(b"|M1|", b"|M2|")


def _kinds(received) -> list[tuple[str, bytes]]:
    return [(r.kind, r.content) for r in received]


def _feed(reader: FrameReader, *pieces: bytes) -> list[tuple[str, bytes]]:
    return [got for piece in pieces for got in _kinds(reader.feed(piece))]


def test_frames_arriving_a_byte_at_a_time_come_out_whole() -> None:
    stream = b"noise" + frame(ONE) + b"\r\n" + frame(TWO)
    reader = FrameReader(max_bytes=10_000)
    assert _feed(reader, *(stream[n:n + 1] for n in range(len(stream)))) == [("message", ONE), ("message", TWO)]
    assert not reader.in_frame


def test_a_new_start_block_inside_a_frame_abandons_it_and_the_new_frame_is_read() -> None:
    reader = FrameReader(max_bytes=10_000)
    assert _feed(reader, START + ONE[:40]) == []
    assert reader.in_frame and reader.frames_started == 1
    assert _feed(reader, frame(ONE)) == [("abandoned", b""), ("message", ONE)]
    assert reader.frames_started == 2


def test_a_restart_in_the_same_read_is_abandoned_too() -> None:
    reader = FrameReader(max_bytes=10_000)
    assert _feed(reader, START + ONE[:40] + frame(TWO)) == [("abandoned", b""), ("message", TWO)]


def test_an_oversized_frame_whose_end_block_is_split_does_not_swallow_the_next_frame() -> None:
    reader = FrameReader(max_bytes=100)
    huge = frame(ONE + b"NTE|1||" + b"x" * 500 + b"\r")
    first = _feed(reader, huge[:-1])  # everything up to <FS>; <CR> comes with the next frame
    assert [kind for kind, _ in first] == ["too-large"] and first[0][1].startswith(b"MSH|")
    assert _feed(reader, huge[-1:] + frame(TWO)) == [("message", TWO)]


def test_an_oversized_frame_skipped_over_several_reads_ends_at_its_split_end_block() -> None:
    reader = FrameReader(max_bytes=100)
    huge = frame(ONE + b"x" * 5000)
    pieces = [huge[:200], huge[200:3000], huge[3000:-1], huge[-1:], frame(ONE)]
    assert [kind for kind, _ in _feed(reader, *pieces)] == ["too-large", "message"]


def test_a_frame_of_exactly_the_limit_is_not_refused_while_its_end_block_is_half_read() -> None:
    body = b"x" * 100
    reader = FrameReader(max_bytes=100)
    assert _feed(reader, START + body + END[:1], END[1:]) == [("message", body)]


def test_an_oversized_frame_that_arrives_whole_is_answered_once() -> None:
    reader = FrameReader(max_bytes=100)
    assert [kind for kind, _ in _feed(reader, frame(ONE + b"x" * 500) + frame(TWO))] == ["too-large", "message"]


def test_a_restart_inside_an_oversized_frame_is_not_answered_twice() -> None:
    reader = FrameReader(max_bytes=100)
    assert [kind for kind, _ in _feed(reader, START + ONE + b"x" * 500)] == ["too-large"]
    assert _feed(reader, frame(TWO)) == [("message", TWO)]
