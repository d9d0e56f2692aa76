"""HL7 v2 bytes to text, in the character set the message declares in MSH-18 (HL7 table 0211).

The MSH segment is ASCII whatever the character set, so MSH-18 is read from the bytes before anything is decoded.
"""

from __future__ import annotations

import re

from services.ingest.feeds.model import AdapterError
from shared.fhir import Issue

# HL7 table 0211 values whose byte values below 0x80 are ASCII (so the MSH segment reads the same), as Python
# codecs. The rest of the table (UNICODE, UNICODE UTF-16 and UTF-32, ISO IR14, ISO IR87, ISO IR159, CNS
# 11643-1992) is refused: either the MSH segment would not be ASCII or there is no codec for it.
CHARSETS = {
    "ASCII": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 10)},
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
# Names senders use outside the table for the same sets: refusing every message of a live feed over the spelling
# of a character set we can read would lose more than it protects.
ALIASES = {"UTF-8": "UNICODE UTF-8", "UTF8": "UNICODE UTF-8", "ISO-8859-1": "8859/1", "ISO8859-1": "8859/1",
           "ISO_8859-1": "8859/1", "LATIN1": "8859/1", "ISO-8859-15": "8859/15", "US-ASCII": "ASCII"}
MSH_18 = ("MSH", 18, 0)
_SEGMENT_END = re.compile(rb"[\r\n]")


def decode(content: bytes) -> str:
    """The message as text: in MSH-18's character set when it names one; otherwise UTF-8, or ISO-8859-1 when the
    bytes are not UTF-8 (English PAS systems often send Latin-1 without saying so). AdapterError (an AR naming
    MSH-18) for a character set not read here, or bytes that are not in the character set declared."""
    declared = declared_charset(content)
    if declared is None or declared == '""':  # the HL7 null: no character set declared
        return _undeclared(content)
    declared = ALIASES.get(declared.upper(), declared)
    if declared.upper() == "ASCII" and not content.isascii():
        return _undeclared(content)  # "ASCII" with accented names is common, and always a Latin set or UTF-8
    codec = CHARSETS.get(declared.upper())
    if codec is None:
        raise _refusal(f"MSH-18 character set {declared!r} is not one this service reads (HL7 table 0211: "
                       f"{', '.join(CHARSETS)})", "103")
    try:
        return content.decode(codec)
    except UnicodeDecodeError as exc:
        raise _refusal(f"the message is not valid {declared} as MSH-18 declares: byte 0x{content[exc.start]:02X} "
                       f"at offset {exc.start}", "102") from None


def declared_charset(content: bytes) -> str | None:
    """MSH-18's first repetition (the character set of the message; any others are alternates switched to by
    escape sequences, which are not read), or None when the message has none or does not start with MSH."""
    msh = _SEGMENT_END.split(content.lstrip(b"\r\n \t\x00"), maxsplit=1)[0]
    if not msh.startswith(b"MSH") or len(msh) < 8:
        return None
    separator, repetition = msh[3:4], msh[5:6]
    fields = msh.split(separator)  # fields[0] is "MSH" and fields[1] MSH-2, so MSH-n is fields[n - 1]
    if len(fields) < 18:
        return None
    value = fields[17].split(repetition)[0].strip()
    return value.decode("ascii", "replace") or None


def _undeclared(content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return content.decode("latin-1")


def _refusal(text: str, hl7_code: str) -> AdapterError:
    return AdapterError(Issue(text, "MSH-18", code="not-supported" if hl7_code == "103" else "value"),
                        hl7_location=MSH_18, hl7_code=hl7_code)
