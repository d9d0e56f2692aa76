"""HL7 v2 bytes are decoded in the character set MSH-18 declares (HL7 table 0211); without one, UTF-8 or else
ISO-8859-1 as before; a character set not read here, or bytes not in the one declared, refuse the message."""

import pytest

from services.ingest.feeds import hl7v2_charset
from services.ingest.feeds.model import AdapterError
from tests.fixtures.ingest import messages


def _declaring(charset: str, given: str = "RENÉ\u00a0LOUIS") -> str:
    return messages.with_field(messages.adt("A28", given=given), "MSH", 17, charset)


def test_latin1_bytes_that_are_also_valid_utf8_are_read_as_msh18_says() -> None:
    raw = _declaring("8859/1").encode("latin-1")
    assert b"REN\xc9\xa0LOUIS" in raw  # the same two bytes are UTF-8 for one other letter (ɠ)
    assert "RENÉ\u00a0LOUIS" in hl7v2_charset.decode(raw)


@pytest.mark.parametrize(("charset", "codec"), [("8859/15", "iso8859-15"), ("UNICODE UTF-8", "utf-8"),
                                                ("ASCII", "ascii"), ("unicode utf-8", "utf-8")])
def test_the_declared_character_set_is_used(charset: str, codec: str) -> None:
    given = "Zoë€" if codec != "ascii" else "Zoe"
    text = _declaring(charset, given=given)
    assert hl7v2_charset.decode(text.encode(codec)) == text


def test_the_first_repetition_of_msh18_is_the_messages_character_set() -> None:
    raw = _declaring("8859/1~UNICODE UTF-8").encode("latin-1")
    assert "RENÉ\u00a0LOUIS" in hl7v2_charset.decode(raw)


@pytest.mark.parametrize("content", [messages.adt("A28", given="Zoë").encode("utf-8"),
                                     messages.adt("A28", given="Zoë").encode("latin-1")])
def test_without_msh18_utf8_is_tried_then_latin1(content: bytes) -> None:
    assert "Zoë" in hl7v2_charset.decode(content)


@pytest.mark.parametrize("charset", ["EBCDIC", "UNICODE UTF-16", "ISO IR87", "UTF-16"])
def test_a_character_set_not_read_here_is_refused_naming_msh18(charset: str) -> None:
    with pytest.raises(AdapterError) as refused:
        hl7v2_charset.decode(_declaring(charset, given="Zoe").encode())
    assert refused.value.hl7_location == ("MSH", 18, 0) and refused.value.hl7_code == "103"
    assert refused.value.issues[0].expression == "MSH-18" and charset in refused.value.issues[0].diagnostics


@pytest.mark.parametrize(("charset", "codec"), [("UTF-8", "utf-8"), ("utf8", "utf-8"), ("ISO-8859-1", "latin-1"),
                                                ("Latin1", "latin-1")])
def test_common_names_outside_the_table_are_read_as_the_set_they_name(charset: str, codec: str) -> None:
    text = _declaring(charset)
    assert hl7v2_charset.decode(text.encode(codec)) == text


@pytest.mark.parametrize("content", ["Zoë".encode("latin-1"), "Zoë".encode()])
def test_ascii_declared_over_accented_names_is_read_as_if_undeclared(content: bytes) -> None:
    raw = _declaring("ASCII", given="GIVEN").encode().replace(b"GIVEN", content)
    assert "Zoë" in hl7v2_charset.decode(raw)


def test_the_hl7_null_in_msh18_declares_nothing() -> None:
    assert "Zoë" in hl7v2_charset.decode(_declaring('""', given="Zoë").encode("latin-1"))


@pytest.mark.parametrize(("charset", "content"), [("UNICODE UTF-8", "Zoë".encode("latin-1")),
                                                  ("UTF-8", "Zoë".encode("latin-1"))])
def test_bytes_not_in_the_declared_character_set_are_refused(charset: str, content: bytes) -> None:
    raw = _declaring(charset, given="GIVEN").encode().replace(b"GIVEN", content)
    with pytest.raises(AdapterError) as refused:
        hl7v2_charset.decode(raw)
    assert refused.value.hl7_location == ("MSH", 18, 0) and "0xEB" in refused.value.issues[0].diagnostics


@pytest.mark.parametrize(("content", "declared"), [
    (b"MSH|^~\\&|PAS|RR8|SCR|ICS|2024||ADT^A28|1|P|2.4|||AL|NE|GBR|8859/1|EN\r", "8859/1"),
    (b"\r\nMSH#^~\\&#PAS#RR8#SCR#ICS#2024##ADT^A28#1#P#2.4###AL#NE#GBR# 8859/1 #EN\r", "8859/1"),
    (b"MSH|^~\\&|PAS|RR8|SCR|ICS|2024||ADT^A28|1|P|2.4|||AL|NE|GBR||EN\r", None),
    (b"MSH|^~\\&|PAS|RR8\rPID|1|||||||||||||||||8859/1\r", None),
    (b"garbage", None),
])
def test_msh18_is_read_from_the_msh_segment_alone(content: bytes, declared: str | None) -> None:
    assert hl7v2_charset.declared_charset(content) == declared
