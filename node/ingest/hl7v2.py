"""Reading HL7 v2 messages: segments, fields, components, repetitions, escapes and timestamps; and
escaping text to write into one.

Total over any input: :class:`Hl7Error` (with a reason that quotes no value of the message) is the
only exception. Field numbers follow the standard: ``MSH-9`` is ``field("MSH", 9)`` although MSH-1
is the field separator itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from node.errors import DataError

_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Unicode line separators (read as line breaks) and lone surrogates (not encodable: made U+FFFD).
_UNICODE_BREAKS = re.compile(r"[\u2028\u2029\x85]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class Hl7Error(DataError):
    """The message cannot be read; the reason names what is wrong, never a value of the message."""


_TIMESTAMP = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")


@dataclass(frozen=True)
class Hl7Message:
    """One message: its segments, each a tuple of raw (still escaped) fields with the name at index 0."""

    segments: tuple[tuple[str, ...], ...]
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    def first(self, name: str) -> tuple[str, ...] | None:
        """The first segment called ``name``."""
        return next((segment for segment in self.segments if segment[0] == name), None)

    def repetitions(self, segment: tuple[str, ...] | None, number: int) -> list[str]:
        """The repetitions of field ``number`` of ``segment`` (raw)."""
        if segment is None or number >= len(segment) or not segment[number]:
            return []
        return segment[number].split(self.repetition) if segment[0] != "MSH" or number != 2 else [segment[number]]

    def value(self, segment: tuple[str, ...] | None, number: int, component: int = 1, repetition: int = 0,
              subcomponent: int = 1) -> str:
        """One (sub)component of one repetition of a field, unescaped; "" when absent."""
        repeats = self.repetitions(segment, number)
        if repetition >= len(repeats):
            return ""
        components = repeats[repetition].split(self.component)
        if component > len(components):
            return ""
        subcomponents = components[component - 1].split(self.subcomponent)
        return self.unescape(subcomponents[subcomponent - 1]) if subcomponent <= len(subcomponents) else ""

    def field(self, name: str, number: int, component: int = 1) -> str:
        """A component of a field of the first segment called ``name``."""
        return self.value(self.first(name), number, component)

    def unescape(self, text: str) -> str:
        """Text with the HL7 escape sequences resolved (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\.br\\ as a line break,
        \\Xhh..\\ as bytes; formatting and unknown escapes dropped)."""
        if self.escape not in text:
            return text.strip()
        e = self.escape
        separators = {"F": "|", "S": self.component, "T": self.subcomponent, "R": self.repetition, "E": e}
        out, parts = [], text.split(e)
        for index, part in enumerate(parts):
            if index % 2 == 0:
                out.append(part)
            elif part in separators:
                out.append(separators[part])
            elif part == ".br":
                out.append("\n")
            elif part.startswith("X") and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", part):
                out.append(bytes.fromhex(part[1:]).decode("utf-8", "replace"))
        return "".join(out).strip()


def parse(text: str) -> Hl7Message:
    """Split a message (segments separated by CR, LF or CRLF) into segments and fields."""
    segments_text = [s for s in re.split(r"\r\n|\r|\n", text.strip("\x0b\x1c\r\n ")) if s.strip()]
    if not segments_text or not segments_text[0].startswith("MSH") or len(segments_text[0]) < 8:
        raise Hl7Error("the message does not begin with an MSH segment")
    msh = segments_text[0]
    separator, encoding = msh[3], msh[4:8]
    if len(set(separator + encoding)) != 5 or separator.isalnum() or any(c.isalnum() for c in encoding):
        raise Hl7Error("MSH-1/MSH-2 do not define five distinct separators")
    component, repetition, escape, subcomponent = encoding[0], encoding[1], encoding[2], encoding[3]
    segments: list[tuple[str, ...]] = []
    for raw in segments_text:
        fields = raw.split(separator)
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", fields[0]):
            raise Hl7Error(f"segment {len(segments) + 1} has no valid segment name")
        if fields[0] == "MSH":  # MSH-1 is the separator: number the fields as the standard does
            fields = ["MSH", separator, *fields[1:]]
        segments.append(tuple(fields))
    return Hl7Message(tuple(segments), component, repetition, escape, subcomponent)


def split_messages(text: str) -> list[str]:
    """The messages of a file of HL7 messages (each begins with an MSH segment; MLLP frame marks and
    blank lines between them are ignored)."""
    messages: list[list[str]] = []
    for line in re.split(r"\r\n|\r|\n", text.replace("\x0b", "\n").replace("\x1c", "\n")):
        if line.startswith("MSH"):
            messages.append([line])
        elif line.strip() and messages:
            messages[-1].append(line)
    return ["\r".join(segments) for segments in messages]


def timestamp(value: str) -> float | None:
    """An HL7 DTM/TS (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``) as epoch seconds; a value without a
    zone is local time. None when empty or not a timestamp."""
    match = _TIMESTAMP.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                          int(second or 0))
    except ValueError:
        return None
    if zone:
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        return moment.replace(tzinfo=timezone(sign * offset)).timestamp()
    return moment.astimezone().timestamp()


def escape(text: str, line_breaks: bool = False) -> str:
    """HL7-escape ``text``; newlines (and Unicode line separators) become ``\\.br\\`` when ``line_breaks``,
    else spaces; control characters (MLLP's framing bytes among them) are dropped, lone surrogates replaced."""
    text = _SURROGATE.sub("\ufffd", _UNICODE_BREAKS.sub("\n", str(text)))
    text = "".join(_ESCAPES.get(char, char) for char in text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\n", "\\.br\\" if line_breaks else " ")
    return _CONTROL.sub("", text)
