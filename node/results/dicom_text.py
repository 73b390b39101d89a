"""Text from the model or the source made fit for DICOM text values (LT, ST, UT), without losing it.

PS3.5 6.2: LT, ST and UT hold graphic characters and the controls CR, LF, FF (and ESC, which the node
never writes: its objects are UTF-8). Anything else — other C0 and C1 controls, DEL, a lone surrogate
(which UTF-8 cannot encode at all) — makes an object invalid or unwritable. :func:`text_value` drops
them for text meant to be read (reasoning, notices); :func:`raw_value` escapes them reversibly, so the
model's raw output stays whole: each such character becomes ``\\u{hhhh}``, and a literal ``\\u{``
becomes ``\\u{5c}u{``.
"""

from __future__ import annotations

import re

from node.results.provenance import clip

#: Characters no single-line value (LO, SH, PN) may hold: C0 and C1 controls, DEL, lone surrogates.
NOT_IN_A_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: Characters LT/ST/UT may not hold: C0 controls but TAB (made a space), LF, FF, CR; DEL; C1; lone surrogates.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: Unicode line separators, read as line breaks.
_LINE_BREAKS = str.maketrans({"\u2028": "\n", "\u2029": "\n", "\x85": "\n", "\t": " "})


def text_value(text: str, limit: int) -> str:
    """``text`` as a valid LT/ST/UT value of at most ``limit`` characters: Unicode line separators made
    line feeds, tabs spaces, every other forbidden character dropped."""
    return clip(_NOT_TEXT.sub("", str(text).translate(_LINE_BREAKS)), limit)


def raw_value(text: str, limit: int) -> str:
    """``text`` as a valid UT value that still holds all of it: forbidden characters (tabs and Unicode line
    separators included) escaped as ``\\u{hhhh}``; cut at ``limit`` characters only when longer."""
    escaped = str(text).replace("\\u{", "\\u{5c}u{")
    escaped = re.sub(r"[\x00-\x08\x09\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]",
                     lambda m: f"\\u{{{ord(m.group()):x}}}", escaped)
    return clip(escaped, limit)
