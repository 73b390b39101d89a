"""The AI report as a PDF a viewer can show: the answer and the model's full reasoning first (what the reader
opens it for), the question asked, each key image with its boxes and labels burned in, the context the model
was given, caveats, and which model and node made it, under the research-use label on every page.

Built with fpdf2 (pure Python, no markup in plain text cells: the model's text is written as text, never
parsed) in DejaVu Sans, embedded as a subset so any script the font covers reads the same everywhere; a
character the font lacks is shown as U+FFFD rather than dropped. The bytes depend only on what is given:
the creation date comes from ``created`` and the file identifier (fpdf2's digest of the content and that
date) with it; the producer is the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from fpdf import FPDF
from PIL import Image

from node.context.text import GivenContext
from node.errors import NodeError
from node.findings import Findings
from node.results.dicom_text import text_value
from node.results.provenance import DISCLAIMER, Provenance, software_versions

#: The Unicode font embedded in every report, the first found: Debian/Ubuntu fonts-dejavu-core, then the
#: paths of RHEL/Fedora's dejavu-sans-fonts.
FONT_PATHS = (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
              Path("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf"),
              Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"))
TITLE = "AI report"
#: Text beyond this many characters (per section) is cut, marked: a runaway model fills no thousand pages.
SECTION_LIMIT = 60_000
#: Pictures are embedded at most this many pixels wide or high (a report, not the diagnostic image).
PICTURE_PIXELS = 1024
_BODY, _HEADING, _SMALL = 10, 13, 8
_LINE = 5.0


class NoReportFont(NodeError):
    """No Unicode font to embed: the report is left out (fonts-dejavu-core is not installed). Not the data's
    fault, and not the moment's: the host lacks the package until an operator installs it."""


def report_font() -> Path:
    """The TrueType font the report embeds."""
    found = next((path for path in FONT_PATHS if path.is_file()), None)
    if found is None:
        raise NoReportFont(f"no DejaVu Sans at {', '.join(map(str, FONT_PATHS))}: install fonts-dejavu-core")
    return found


@dataclass(frozen=True)
class ReportContent:
    """What the report says besides the pictures."""

    question: str
    findings: Findings
    given: GivenContext
    provenance: Provenance
    study: tuple[tuple[str, str], ...]  # (what, value) lines identifying the study: patient, date, accession
    references: tuple[tuple[str, str], ...] = ()  # (what, UID): the SR and the report itself


class _Report(FPDF):
    """An A4 report whose every page carries the research-use label and its number."""

    def __init__(self, banner: str) -> None:
        super().__init__(format="A4")
        self.banner = banner
        self.alias_nb_pages("")  # fpdf2 would put the page count for "{nb}" anywhere, the model's text included

    def header(self) -> None:
        """The research-use label, in red, on every page."""
        self.set_font("report", size=_SMALL)
        self.set_text_color(200, 0, 0)
        self.multi_cell(0, 4, text=f"{self.banner} - NOT FOR DIAGNOSIS", align="L", new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)
        self.ln(2)

    def footer(self) -> None:
        """The page's number."""
        self.set_y(-12)
        self.set_font("report", size=_SMALL)
        self.cell(0, 4, text=f"{TITLE} - page {self.page_no()}", align="C")


def _safe(pdf: FPDF, text: str, limit: int = SECTION_LIMIT) -> str:
    """``text`` as the report shows it: controls dropped (line breaks kept), cut at ``limit``, each character
    the font lacks shown as U+FFFD."""
    cmap = pdf.current_font.cmap  # type: ignore[union-attr]  # a TrueType font is set before any text
    return "".join(c if ord(c) in cmap or c == "\n" else "\ufffd" for c in text_value(text, limit))


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(2)
    pdf.set_font("report", size=_HEADING)
    pdf.multi_cell(0, 7, text=text, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("report", size=_BODY)


def _paragraph(pdf: FPDF, text: str) -> None:
    """Wrapped plain text (no markup is read in it), onto as many pages as it needs."""
    pdf.multi_cell(0, _LINE, text=_safe(pdf, text) or "-", align="L", new_x="LMARGIN", new_y="NEXT")


def _lines(pdf: FPDF, rows: Sequence[tuple[str, str]]) -> None:
    _paragraph(pdf, "\n".join(f"{what}: {value}" for what, value in rows))


def _picture(pdf: FPDF, pixels: np.ndarray, caption: str) -> None:
    """One key image, scaled to the page width (at most a page high), under its caption."""
    image = Image.fromarray(pixels)
    image.thumbnail((PICTURE_PIXELS, PICTURE_PIXELS), Image.Resampling.LANCZOS)
    width = pdf.epw
    height = width * image.height / image.width
    room = pdf.eph - 20
    if height > room:
        width, height = width * room / height, room
    if pdf.will_page_break(height + 2 * _LINE):
        pdf.add_page()
    _paragraph(pdf, caption)
    pdf.image(image, x=pdf.l_margin, w=width, h=height)
    pdf.ln(2)


def build_report_pdf(content: ReportContent, pictures: Sequence[tuple[str, np.ndarray]], created: datetime) -> bytes:
    """The report as PDF bytes; ``pictures``: (caption, RGB pixels) of each key image with its boxes drawn.
    The same content, pictures and ``created`` give the same bytes."""
    provenance, findings = content.provenance, content.findings
    pdf = _Report(provenance.banner)
    pdf.add_font("report", fname=str(report_font()))
    pdf.set_font("report", size=_BODY)
    pdf.set_title(f"{TITLE} - {provenance.banner}")
    pdf.set_subject(DISCLAIMER)
    pdf.set_creator(software_versions(provenance))
    pdf.set_producer(software_versions(provenance))
    pdf.set_creation_date(created)
    pdf.set_lang("en")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("report", size=18)
    pdf.cell(0, 10, text=TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("report", size=_BODY)
    _paragraph(pdf, DISCLAIMER)
    _lines(pdf, content.study)
    _heading(pdf, "Answer")
    _paragraph(pdf, ", ".join(findings.labels) or "No answer could be read from the model's output.")
    _heading(pdf, "Reasoning")
    _paragraph(pdf, findings.reasoning or "The model gave no reasoning.")
    _heading(pdf, "Question asked")
    _paragraph(pdf, content.question)
    if findings.boxes:
        _heading(pdf, "Boxes")
        _paragraph(pdf, "\n".join(f"{number}. {box.label} on image {box.model.image_index + 1}"
                                  for number, box in enumerate(findings.boxes, start=1)))
    _heading(pdf, "What the model was given")
    _paragraph(pdf, "\n".join(filter(None, [content.given.text, "Inputs:",
                                            *(f"- {line}" for line in content.given.inputs)])))
    _heading(pdf, "Caveats")
    _paragraph(pdf, "\n".join([DISCLAIMER, *provenance.caveats, *(f"Reading the output: {warning}"
                                                                  for warning in findings.warnings)]))
    _heading(pdf, "Made by")
    _lines(pdf, [("Model", provenance.model_identity), ("Node", software_versions(provenance)),
                 ("Test model", "yes" if provenance.is_test_result else "no"),
                 ("Created", created.isoformat(timespec="seconds")), *content.references])
    if pictures:
        pdf.add_page()
        _heading(pdf, "Key images")
        for caption, pixels in pictures:
            _picture(pdf, pixels, caption)
    return bytes(pdf.output())
