"""The node's results opened in a real viewer, as a radiologist would: OHIF over Orthanc's DICOMweb.

For a chest CR, a DX without pixel spacing or plane geometry, a MONOCHROME1 CR, a CT, a brain MR, a
mammogram and a breast ultrasound image, the node's
own chain (routing, imaging, a recorded answer boxing the synthetic lesion, the results writer)
makes SR, SEG, presentation state and SC; Orthanc holds them with the source; OHIF opens the study.
Checked on the screen: the SR draws its box on the lesion and, once tracked, lists the finding's label
in the measurements panel; the SEG paints the box region over the lesion; no error boundary and no
console error. Screenshots go to ``.cache/test-artifacts/viewer`` (``QOQ_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from playwright.sync_api import Browser, Frame, Page, sync_playwright
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    MRImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)
from scipy import ndimage

from node.chain import prepare_study
from node.config import load_config
from node.context.gather import ContextGatherer, StudyIdentity
from node.findings import locate, parse_output
from node.imaging.decode import iter_frames
from node.imaging.inputs import ModelInput
from node.imaging.prepared import Prepared
from node.model.profiles import PROFILES
from node.reading import read_from_text
from node.results.hl7 import Hl7Party
from node.results.writer import write_results
from node.routing import DEFAULT_RULES, Router, StudyHeader
from node.store import Store
from node.store.clinical import KnownStudy
from node.testing.pacs import Orthanc
from node.testing.synthetic import SyntheticStudy, write_cr_study, write_ct_study, write_file
from tests.helpers import wait_for
from tests.reference import Box, answer, model_box
from tests.viewer.ohif import CHROMIUM, CHROMIUM_ARGS, REPO, ViewerServer, ohif_dist

ARTIFACTS = Path(os.environ.get("QOQ_TEST_ARTIFACTS", REPO / ".cache" / "test-artifacts")) / "viewer"
RULES = DEFAULT_RULES
#: The labels the recorded answers give the boxes, one of each task's trained options.
LABELS = {"chest_xray": "Lung Lesion", "ct": "Acute PE", "mri": "Glioma Tumor", "mammography": "BIRAD 4",
          "ultrasound": "Malignant"}


def _dx_without_geometry(directory: Path) -> SyntheticStudy:
    """A DX made from the synthetic CR: no pixel spacing of any kind, no patient orientation."""
    study = write_cr_study(directory, size=768)
    ds = pydicom.dcmread(study.files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality, ds.SOPInstanceUID = "DX", generate_uid()
    for keyword in ("ImagerPixelSpacing", "PixelSpacing", "PatientOrientation"):
        ds.pop(keyword, None)
    write_file(ds, study.files[0])
    return study


def _monochrome1_cr(directory: Path) -> SyntheticStudy:
    """The synthetic CR stored as MONOCHROME1 (high values dark): it must look the same."""
    study = write_cr_study(directory, size=768)
    ds = pydicom.dcmread(study.files[0])
    pixels = ds.pixel_array
    ds.PixelData = (int(pixels.max()) - pixels).astype(np.uint16).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter = str(int(pixels.max()) - int(float(ds.WindowCenter)))
    write_file(ds, study.files[0])
    return study


def _brain_mr(directory: Path) -> SyntheticStudy:
    """The synthetic CT's slices as a brain MR series (patient geometry, no Hounsfield units)."""
    study = write_ct_study(directory, slices=5, size=256)
    for path in study.files:
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality, ds.BodyPartExamined, ds.StudyDescription = "MR", "BRAIN", "SYNTHETIC MR BRAIN"
        for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "KVP"):
            ds.pop(keyword, None)
        ds.WindowCenter, ds.WindowWidth = "1064", "400"
        write_file(ds, path)
    return study


def _mammogram(directory: Path) -> SyntheticStudy:
    """The synthetic CR as a left CC mammogram."""
    study = write_cr_study(directory, size=768)
    ds = pydicom.dcmread(study.files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.Modality, ds.BodyPartExamined, ds.ImageLaterality, ds.ViewPosition = "MG", "BREAST", "L", "CC"
    write_file(ds, study.files[0])
    return study


def _breast_ultrasound(directory: Path) -> SyntheticStudy:
    """The synthetic CR as an 8-bit breast ultrasound image (no patient geometry, no window)."""
    study = write_cr_study(directory, size=512)
    ds = pydicom.dcmread(study.files[0])
    pixels = ds.pixel_array.astype(np.float64)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.Modality, ds.BodyPartExamined = "US", "BREAST"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.round(pixels * 255 / pixels.max()).astype(np.uint8).tobytes()
    for keyword in ("WindowCenter", "WindowWidth", "ImagerPixelSpacing"):
        ds.pop(keyword, None)
    write_file(ds, study.files[0])
    return study


STUDIES = {
    "cr": lambda directory: write_cr_study(directory, size=1024),
    "dx_without_geometry": _dx_without_geometry,
    "cr_monochrome1": _monochrome1_cr,
    "ct": lambda directory: write_ct_study(directory, slices=5, size=256),
    "mr": _brain_mr,
    "mg": _mammogram,
    "us": _breast_ultrasound,
}


def _lesion_model_box(key: ModelInput) -> Box:
    """Where a model that found the lesion boxes it: the brightest patch as displayed (MONOCHROME1 inverted,
    windowed as the header says), in the coordinates of the image the model was given."""
    frame = key.geometry.placements[0].source
    [shown] = [f for f in iter_frames(key.path) if f.source == frame]
    lesion = _largest(shown.pixels >= 250)
    assert lesion is not None
    return model_box((lesion[0], lesion[1], lesion[2] + 1, lesion[3] + 1), frame.rows, frame.columns)


def _boxed_answer(label: str, *keys: ModelInput) -> str:
    """What a model that found the lesion on each of ``keys`` (its input images, in order) answers."""
    return answer(label, *map(_lesion_model_box, keys), reasoning="A dense round opacity.")


def _results(study: SyntheticStudy, out: Path) -> list[Path]:
    """What the node makes of ``study`` with a recorded answer boxing the lesion of the image it reads."""
    config = load_config(None, environ={"QOQ_NODE__ROUTING__RULES": str(RULES)})
    outcome = prepare_study(study.study_uid, list(study.files), Router.from_file(RULES), config.imaging,
                            PROFILES["qwen2.5-vl"])
    assert isinstance(outcome, Prepared) and outcome.inputs, outcome
    [key] = outcome.inputs
    text = _boxed_answer(LABELS[outcome.task.domain], key)
    findings = locate(parse_output(text), [m.geometry for m in outcome.inputs])
    assert findings.boxes, findings.warnings
    read = read_from_text(outcome, text, "replay (recorded responses; TEST)", True)
    written = write_results(read, out, {"oru": Hl7Party()}, secondary_capture=True)
    return [item.path for item in written.dicom]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, software WebGL."""
    if not (ohif_dist() / "index.html").is_file():
        pytest.fail(f"no OHIF build at {ohif_dist()}: .ci/run unpacks @ohif/app there (or set QOQ_OHIF_DIST)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def viewer(orthanc_installed: None,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, ViewerServer]]:
    """Orthanc with DICOMweb, and OHIF in front of it on one origin."""
    with Orthanc(tmp_path_factory.mktemp("viewer-pacs"), dicomweb=True) as pacs, \
            ViewerServer(pacs.url, ohif_dist()) as server:
        yield pacs, server


class Screen:
    """One OHIF page, its console, and what its viewport shows."""

    def __init__(self, page: Page, name: str) -> None:
        self.page, self.name = page, name
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions (OHIF's error boundary logs as 'Error Boundary')."""
        return [line for line in self.console
                if line.startswith(("error:", "pageerror:")) or "Error Boundary" in line]

    def load(self, url: str) -> None:
        """Open ``url`` and wait until the viewport draws an image, closing the first-visit notices."""
        self.page.goto(url)
        self.page.locator("[data-cy=viewport-pane] canvas").first.wait_for(timeout=60_000)
        self.until("loaded", _drawn, timeout=20)

    def dismiss(self) -> None:
        """Close the first-visit tour and the investigational-use notice."""
        for label in ("Skip all", "Confirm and hide"):
            button = self.page.get_by_text(label)
            if button.count():
                button.first.click()

    def viewport(self, step: str) -> np.ndarray:
        """The viewport as RGB pixels, saved as an artefact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{self.name}-{step}-page.png")
        shot = self.page.locator("[data-cy=viewport-pane]").first.screenshot(path=ARTIFACTS / f"{self.name}-{step}.png")
        return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)

    def until(self, step: str, shows: Callable[[np.ndarray], object], timeout: float = 30) -> np.ndarray:
        """The viewport's pixels (saved as ``step``) once ``shows(pixels)`` holds, polled on screenshots and
        closing notices as they come; after ``timeout`` seconds the last pixels, for the caller's
        assertions to say what is wrong."""
        deadline = time.monotonic() + timeout
        while True:
            self.dismiss()
            pixels = self.viewport(step)
            if shows(pixels) or time.monotonic() > deadline:
                return pixels

    def open_series(self, modality: str) -> None:
        """Double-click the study browser's entry of the first series of ``modality``."""
        self.page.locator("[data-cy=series-modality-label]", has_text=modality).first.dblclick()


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, columns = np.nonzero(mask)
    return (int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max())) if len(rows) else None


def _largest(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box of the largest connected region of ``mask`` (the lesion, not the overlay text)."""
    labelled, count = ndimage.label(mask)
    if not count:
        return None
    sizes = ndimage.sum(mask, labelled, range(1, count + 1))
    return _bbox(labelled == int(np.argmax(sizes)) + 1)


def _lesion(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """The phantom lesion on screen: the largest patch of the brightest grey."""
    box = _largest(_bright_grey(pixels))
    assert box is not None, "no lesion on the screen"
    return box


def _outline(mask: np.ndarray, near: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """A drawn rectangle: the outermost rows and columns of ``mask`` that run along a good part of the
    lesion's size (a dashed edge), ignoring the thin leader line to the label."""
    width, height = near[2] - near[0] + 1, near[3] - near[1] + 1
    columns = np.nonzero(mask.sum(axis=0) >= height // 4)[0]
    rows = np.nonzero(mask.sum(axis=1) >= width // 4)[0]
    if not len(columns) or not len(rows):
        return None
    return int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max())


def _drawn(pixels: np.ndarray) -> bool:
    """Whether the viewport shows an image: grey levels in its middle half (not only the corner texts)."""
    height, width = pixels.shape[:2]
    return bool(pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4].max() > 40)


def _bright_grey(pixels: np.ndarray) -> np.ndarray:
    grey = (np.abs(pixels[..., 0] - pixels[..., 1]) < 8) & (np.abs(pixels[..., 1] - pixels[..., 2]) < 8)
    return grey & (pixels[..., 0] > 235)


def _green(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 1] > 180) & (pixels[..., 0] < 120) & (pixels[..., 2] < 120)


def _red(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 0] - pixels[..., 1] > 40) & (pixels[..., 0] - pixels[..., 2] > 40)


def _box_on_lesion(pixels: np.ndarray) -> bool:
    """Whether a green rectangle is drawn on the phantom lesion (the SR's box, once OHIF has drawn it)."""
    lesion = _largest(_bright_grey(pixels))
    return lesion is not None and _near(_outline(_green(pixels), lesion), lesion, 4)


def _near(found: tuple[int, int, int, int] | None, lesion: tuple[int, int, int, int], tolerance: int) -> bool:
    return found is not None and all(abs(a - b) <= tolerance for a, b in zip(found, lesion, strict=True))


def _sr_box_on_the_lesion_and_tracked(screen: Screen, label: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Open the SR: its box must be drawn on the lesion; track it: its label must be in the measurements
    panel. The SR view's pixels and where the lesion is on them."""
    screen.open_series("SR")
    shown = screen.until("sr", _box_on_lesion)
    lesion = _lesion(shown)
    outline = _outline(_green(shown), lesion)
    assert _near(outline, lesion, 4), f"SR box {outline} is not on the lesion {lesion}"
    screen.page.get_by_role("button", name="Yes").first.click()  # track: the SR's measurements load
    screen.page.locator("[data-cy=trackedMeasurements-btn]").first.click()
    try:
        wait_for(lambda: label in screen.page.locator("body").inner_text().lower(), timeout=30, interval=0.2,
                 what="the finding's label in the measurements panel")
    finally:
        screen.viewport("sr-tracked")
    return shown, lesion


@pytest.mark.parametrize("kind", list(STUDIES))
def test_the_radiologist_sees_the_ai_box_in_ohif(kind: str, browser: Browser, viewer, tmp_path: Path) -> None:
    pacs, server = viewer
    study = STUDIES[kind](tmp_path / kind)
    results = _results(study, tmp_path / "results")
    for path in [*study.files, *results]:
        pacs.upload(path)
    label = LABELS[Router.from_file(RULES).route(StudyHeader.read(study.files[0])).domain].lower()
    url = f"{server.url}/viewer?StudyInstanceUIDs={study.study_uid}"
    screen = Screen(browser.new_page(viewport={"width": 1400, "height": 900}), kind)
    try:
        screen.load(url)
        shown, lesion = _sr_box_on_the_lesion_and_tracked(screen, label)

        screen.load(url)  # afresh: the SEG over the image as the study opens
        screen.open_series("SEG")
        painted = screen.until("seg", lambda pixels: _near(_largest(_red(pixels)), lesion, 4))
        red = _red(painted)
        assert painted.shape == shown.shape  # the same layout as the SR's: the lesion is where it was
        assert _near(_largest(red), lesion, 4), f"SEG region {_largest(red)} is not on the lesion {lesion}"
        assert screen.errors() == []
    finally:
        screen.page.close()



def _results_with_prior(current: SyntheticStudy, prior: SyntheticStudy, out: Path) -> list[Path]:
    """What the node makes of ``current`` read with ``prior`` (a retrieved prior of the same patient, a
    month earlier): a recorded answer boxing the lesion on both images."""
    root = out / "node"
    folder = root / "context" / prior.study_uid
    folder.mkdir(parents=True)
    shutil.copy(prior.files[0], folder / "00000.dcm")
    store = Store(root / "state.db")
    try:
        identity = StudyIdentity.read(current.files[0], "")
        assert identity.study_time is not None
        store.clinical.know_study(KnownStudy(prior.study_uid, identity.patient_key, "", "CR",
                                             identity.study_time - 30 * 86400, "", f"context/{prior.study_uid}"),
                                  time.time())
        config = load_config(None, environ={"QOQ_NODE__ROUTING__RULES": str(RULES)})
        outcome = prepare_study(current.study_uid, list(current.files), Router.from_file(RULES), config.imaging,
                          PROFILES["qwen2.5-vl"], ContextGatherer(store, root, ""))
    finally:
        store.close()
    assert len(outcome.inputs) == 2 and len(outcome.context.priors) == 1
    text = _boxed_answer(LABELS["chest_xray"], *outcome.inputs)
    findings = locate(parse_output(text), [m.geometry for m in outcome.inputs])
    assert len(findings.boxes) == 2, findings.warnings
    read = read_from_text(outcome, text, "replay (recorded responses; TEST)", True)
    written = write_results(read, out, {"oru": Hl7Party()}, secondary_capture=True)
    return [item.path for item in written.dicom]


def test_a_study_read_with_its_prior_shows_its_own_box_in_ohif(browser: Browser, viewer, tmp_path: Path) -> None:
    """The SR of a radiograph read with a prior references the prior (another study) too: OHIF still
    opens it on the study and draws the box on the current image, with no error."""
    pacs, server = viewer
    current = write_cr_study(tmp_path / "current", size=1024)
    prior = write_cr_study(tmp_path / "prior", size=1024)
    results = _results_with_prior(current, prior, tmp_path / "results")
    for path in [*current.files, *prior.files, *results]:
        pacs.upload(path)
    url = f"{server.url}/viewer?StudyInstanceUIDs={current.study_uid}"
    screen = Screen(browser.new_page(viewport={"width": 1400, "height": 900}), "cr-with-prior")
    try:
        screen.load(url)
        _sr_box_on_the_lesion_and_tracked(screen, LABELS["chest_xray"].lower())
        assert screen.errors() == []
    finally:
        screen.page.close()


def _pdf_line(report: Path, words: str, folder: Path) -> tuple[float, float, float, float]:
    """Where the line holding ``words`` is on the first page of the report's PDF, as fractions of the page's width
    (left, right) and height (top, bottom), as poppler lays it out."""
    ds = pydicom.dcmread(report)
    pdf = folder / "report.pdf"
    pdf.write_bytes(ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength])
    layout = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-bbox-layout", str(pdf), "-"], capture_output=True,
                            text=True, check=True).stdout
    page = re.search(r'<page width="([\d.]+)" height="([\d.]+)"', layout)
    assert page is not None
    width, height = float(page.group(1)), float(page.group(2))
    for line in re.findall(r"<line (.*?)</line>", layout, re.DOTALL):
        text = " ".join(re.findall(r">([^<]+)</word>", line))
        if words in text:
            x0, y0, x1, y1 = (float(v) for v in re.findall(r'(?:xMin|yMin|xMax|yMax)="([\d.]+)"', line)[:4])
            return x0 / width, x1 / width, y0 / height, y1 / height
    raise AssertionError(f"{words!r} is not on the report's first page")


def test_the_ai_report_opens_in_ohif_and_shows_the_reasoning(browser: Browser, viewer, tmp_path: Path) -> None:
    """The AI report (Encapsulated PDF) opens in OHIF's PDF viewport (the dicom-pdf extension, Chromium's PDF
    viewer in the page): the viewer loads the node's document (its title), and the page it draws shows the
    reasoning where the PDF puts it — dark text on the white page, in the line poppler finds the reasoning in."""
    pacs, server = viewer
    study = write_cr_study(tmp_path / "cr", size=1024)
    results = _results(study, tmp_path / "results")
    for path in [*study.files, *results]:
        pacs.upload(path)
    [report] = [path for path in results if path.name == "report.dcm"]
    left, right, top, bottom = _pdf_line(report, "A dense round opacity.", tmp_path)
    screen = Screen(browser.new_page(viewport={"width": 1400, "height": 900}), "cr-report")
    try:
        screen.load(f"{server.url}/viewer?StudyInstanceUIDs={study.study_uid}")
        screen.open_series("DOC")

        def pdf_viewers() -> list[Frame]:
            return [frame for frame in screen.page.frames if frame.url.startswith("chrome-extension://")]

        # polled on screenshots: headless Chromium starts the PDF viewer of an <object> as it paints it
        screen.until("report-opening", lambda _: pdf_viewers())
        [pdf_viewer] = pdf_viewers()
        wait_for(lambda: pdf_viewer.evaluate("document.title").startswith("AI report - AI RESULT"), timeout=30,
                 what="the report's title in the PDF viewer")

        def reasoning(pixels: np.ndarray) -> np.ndarray | None:
            """The reasoning's line on the screen: where it lies on the white page drawn in the viewport."""
            page = _largest((pixels > 245).all(axis=-1))
            if page is None or page[2] - page[0] < 300:
                return None
            width = page[2] - page[0] + 1
            height = width * 297 / 210  # A4: the page may run below the viewport
            return pixels[round(page[1] + top * height) - 2: round(page[1] + bottom * height) + 2,
                          round(page[0] + left * width) - 2: round(page[0] + right * width) + 2]

        def shows_text(pixels: np.ndarray) -> bool:
            line = reasoning(pixels)
            return line is not None and line.size > 0 and bool(((line < 110).all(axis=-1)).mean() > 0.05)

        shown = screen.until("report", shows_text, timeout=30)
        line = reasoning(shown)
        assert line is not None, "no PDF page drawn in the viewport"
        Image.fromarray(line.astype(np.uint8)).save(ARTIFACTS / "cr-report-reasoning-line.png")  # for a person
        dark = (line < 110).all(axis=-1).mean()
        assert 0.05 < dark < 0.6, f"the reasoning's line shows {dark:.0%} text pixels"
        assert screen.errors() == []
    finally:
        screen.page.close()
