"""A read study's results on disk: the DICOM objects and one ORU^R01 per EHR destination.

Each file is written to a temporary name, fsynced and renamed, so a file the outbox points at is
always whole. The UIDs and MSH-10 are deterministic, so writing the same result again (a retry
after a crash) produces the same objects and messages. The SR and the ORU carry every finding; the
SEG, presentation state and SC show the SR's boxes again for other viewers, so one of them that
cannot be made for a source is left out and named in :attr:`ResultSet.omitted`, not allowed to
hold back the report.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from node import __version__
from node.context.text import GivenContext, context_text, input_lines
from node.dicom_files import read_attributes
from node.durable import fsync_dir, write_atomically
from node.findings import Findings
from node.imaging.decode import DecodedFrame, iter_frames
from node.imaging.prepared import Prepared
from node.implementation import IMPLEMENTATION_CLASS_UID, implementation_version_name
from node.reading import Read
from node.results.encapsulated_pdf import build_encapsulated_pdf, report_uid
from node.results.gsps import build_presentation_state, is_colour, presentation_groups
from node.results.hl7 import Hl7Party, NoPatientIdentifier, build_oru, control_id
from node.results.kos import build_kos
from node.results.pdf_report import TITLE, ReportContent, build_report_pdf
from node.results.provenance import Provenance
from node.results.reproducible import settle
from node.results.sc import build_sc, burn_in
from node.results.seg import build_segs
from node.results.segment_reference import SegmentReference
from node.results.source_header import repair_header
from node.results.sr import build_sr

SR_FILE = "sr.dcm"


@dataclass(frozen=True)
class WrittenObject:
    """A result object on disk and its SOP Instance UID (what makes a resend harmless)."""

    path: Path
    sop_instance_uid: str


@dataclass(frozen=True)
class ResultSet:
    """Everything one study version's read produced."""

    dicom: tuple[WrittenObject, ...]
    messages: Mapping[str, tuple[Path, str]]  # HL7 destination name → (message file, MSH-10)
    omitted: tuple[tuple[str, Exception], ...] = ()  # (kind, why) of objects that could not be made

    @property
    def files(self) -> list[Path]:
        """Every file written."""
        return [item.path for item in self.dicom] + [path for path, _ in self.messages.values()]


def result_key(study_uid: str, study_version: int, task: str) -> str:
    """What identifies one result: a study version read for one task."""
    return f"{study_uid}/{study_version}/{task}"


def _dataset_bytes(dataset: Dataset, node_version: str) -> bytes:
    """The object as a Part 10 file naming the node (at ``node_version``) as the implementation that wrote it."""
    dataset.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    dataset.file_meta.ImplementationVersionName = implementation_version_name(node_version)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _shown_again(kind: str, build: Callable[[], list[tuple[str, Dataset]]],
                 omitted: list[tuple[str, Exception]]) -> list[tuple[str, Dataset]]:
    """The objects ``build`` makes, or none (noted in ``omitted``) when it fails."""
    try:
        return build()
    except Exception as exc:
        omitted.append((kind, exc))
        return []


def _on(findings: Findings, images: Sequence[Dataset]) -> Findings:
    """The findings with only the boxes that lie on ``images``."""
    uids = {str(ds.SOPInstanceUID) for ds in images}
    return replace(findings, boxes=tuple(box for box in findings.boxes if box.source.frame.sop_instance_uid in uids))


@dataclass(frozen=True)
class ObjectOptions:
    """Which optional objects a read's results include (``results.*``)."""

    secondary_capture: bool | str = False  # burned-in SCs: "projection" (images without geometry), True (all)
    pdf_report: bool = True  # the AI report as an Encapsulated PDF


def _dicom_objects(read: Read, key_paths: list[Path], sources: Sequence[Dataset], provenance: Provenance,
                   study_version: int, options: ObjectOptions, previous: Sequence[Dataset],
                   given: GivenContext, omitted: list[tuple[str, Exception]],
                   created: datetime) -> list[tuple[str, Dataset]]:
    """(file name, dataset) of the SR, SEGs, presentation state, optional SCs and the optional PDF report over
    the key images (``sources``: the instances at ``key_paths``, read). The SR and the report cover every input
    (a prior's image, an ECG of another study); the SEG, presentation state, KOS and SCs only the study's own
    images, as they belong to its study."""
    study_uid, task = read.prepared.study_uid, read.prepared.task.domain
    # A box is placed only on an image: never in image coordinates on a waveform (an ECG shown as a plot).
    pictures = [ds for ds in sources if "PixelData" in ds]
    findings = _on(read.findings, pictures)
    own = [(path, ds) for path, ds in zip(key_paths, sources, strict=True)
           if str(ds.StudyInstanceUID) == study_uid]
    own_sources = [ds for _, ds in own]
    images = [ds for ds in pictures if str(ds.StudyInstanceUID) == study_uid]
    own_findings = _on(findings, images)
    segs = _shown_again("seg", lambda: [
        (f"seg-{number}.dcm", seg)
        for number, seg in enumerate(build_segs(own_findings, own_sources, provenance, study_version, task), start=1)],
        omitted)
    segments = {str(segment.TrackingUID): SegmentReference(seg, int(segment.SegmentNumber))
                for _, seg in segs for segment in seg.SegmentSequence}
    objects = [(SR_FILE, build_sr(findings, sources, provenance, study_version, task, previous, read.analysed_at,
                                  segments, given)), *segs]
    window = next((m.window for m in read.prepared.inputs if m.window is not None), None)
    for number, group in enumerate(presentation_groups(images), start=1):  # one per kind and size of image
        name = ("csps" if is_colour(group[0]) else "gsps") + \
            (f"-{number}" if number > 1 else "") + ".dcm"
        objects += _shown_again("presentation_state", lambda group=group, number=number, name=name: [  # type: ignore[misc]  # mypy cannot type a lambda's defaults (they bind the loop's values)
            (name, build_presentation_state(own_findings, group, provenance, study_version, task, window, number))],
            omitted)
    if images:  # the key images list most PACS show when the study opens
        objects += _shown_again("kos", lambda: [("kos.dcm", build_kos(own_findings, images, provenance,
                                                                        study_version, task))], omitted)
    if options.secondary_capture:
        objects += _shown_again("sc", lambda: _secondary_captures(
            read.prepared, own_findings, [path for path, _ in own], own_sources, provenance, study_version, task,
            options.secondary_capture), omitted)
    if options.pdf_report:
        content = ReportContent(read.prepared.task.spec.prompt_question, read.findings, given, provenance,
                                _study_lines(sources[0]), (("AI SR", str(objects[0][1].SOPInstanceUID)),
                                                           ("This report", report_uid(study_uid, study_version, task,
                                                                                      provenance))))
        objects += _shown_again("pdf", lambda: [("report.dcm", _report(
            read.prepared, content, findings, key_paths, sources, study_version, created))], omitted)
    return objects


def _study_lines(header: Dataset) -> tuple[tuple[str, str], ...]:
    """What identifies the study on the report: patient, date, accession, description (those given)."""
    rows = (("Patient", f"{header.get('PatientName', '')} ({header.get('PatientID', '')})"),
            ("Study date", str(header.get("StudyDate", ""))), ("Accession", str(header.get("AccessionNumber", ""))),
            ("Study", str(header.get("StudyDescription", ""))))
    return tuple((what, value) for what, value in rows if value.strip(" ()"))


def _report(prepared: Prepared, content: ReportContent, findings: Findings, key_paths: list[Path],
            sources: Sequence[Dataset], study_version: int, created: datetime) -> Dataset:
    """The AI report as an Encapsulated PDF, each key frame of every input image pictured with its boxes."""
    study_uid = prepared.study_uid
    pictures: list[tuple[str, np.ndarray]] = []
    pictured: list[Dataset] = []
    for path, ds in zip(key_paths, sources, strict=True):
        if "PixelData" not in ds:
            continue
        whose = "this study" if str(ds.StudyInstanceUID) == study_uid else f"prior study of {ds.get('StudyDate', '')}"
        for frame in _key_frames(prepared, path, ds):
            caption = f"Image {len(pictures) + 1}: {ds.get('Modality', '')} of {whose}, frame {frame.source.frame}"
            pictures.append((caption, burn_in(frame, findings, content.provenance)))
        pictured.append(ds)
    document = build_report_pdf(content, pictures, created)
    return build_encapsulated_pdf(document, sources[0], pictured, content.provenance, study_version,
                                  prepared.task.domain, f"{TITLE} - {content.provenance.banner}", created)


def report_context(prepared: Prepared) -> GivenContext:
    """What the study's results say the model was given with it."""
    ecg_given, modality = bool(prepared.signals), prepared.routed.modality
    return GivenContext(context_text(prepared.context, prepared.current_images, modality, ecg_given),
                        prepared.context.labs, input_lines(prepared.context, prepared.study_uid, modality, ecg_given))


def _key_paths(prepared: Prepared) -> list[Path]:
    """The instances the model was given, images first, each once."""
    return list(dict.fromkeys([model_input.path for model_input in prepared.inputs]
                              + [signal.path for signal in prepared.signals]))


def _key_frames(prepared: Prepared, path: Path, ds: Dataset) -> list[DecodedFrame]:
    """The frames of the image ``ds`` (at ``path``) that the model was given, decoded."""
    keys = sorted({p.source.frame - 1 for m in prepared.inputs for p in m.geometry.placements
                   if p.source.sop_instance_uid == str(ds.SOPInstanceUID)})
    return list(iter_frames(path, indices=keys))


def _secondary_captures(prepared: Prepared, findings: Findings, key_paths: list[Path], sources: list[Dataset],
                        provenance: Provenance, study_version: int, task: str,
                        which: bool | str) -> list[tuple[str, Dataset]]:
    """One burned-in SC per key frame (``which``: "projection" — only of images without patient
    geometry — or every one)."""
    captures: list[tuple[str, Dataset]] = []
    for path, ds in zip(key_paths, sources, strict=True):
        if "PixelData" not in ds or (which == "projection" and "FrameOfReferenceUID" in ds):
            continue
        for frame in _key_frames(prepared, path, ds):
            captures.append((f"sc-{len(captures) + 1}.dcm",
                             build_sc(frame, ds, findings, provenance, study_version, task)))
    return captures


def write_results(
    read: Read,
    directory: Path,
    parties: Mapping[str, Hl7Party],
    secondary_capture: bool | str = False,
    study_version: int = 1,
    previous_sr: Dataset | None = None,
    critical_labels: Sequence[str] = (),
    created: datetime | None = None,
    node_version: str = __version__,
    pdf_report: bool = True,
) -> ResultSet:
    """Write a read study's results into ``directory``: the SR, SEG and presentation state (GSPS,
    or CSPS for colour images) over its key images, optionally burned-in SCs and (``pdf_report``) the AI
    report as an Encapsulated PDF, and one ORU^R01 per HL7 party (``<name>.hl7``). ``previous_sr``: the
    report of the study version this one supersedes.
    ``created`` (default: now, local time), the moment the objects and messages say they were made, and
    ``node_version``, the node that made them, are all that the bytes take from outside the read: the same
    read written with the same two gives the same bytes."""
    prepared = read.prepared
    created = created or datetime.now()
    provenance = Provenance(read.model, read.is_test_result, node_version, prepared.caveats)
    directory.mkdir(parents=True, exist_ok=True)
    omitted: list[tuple[str, Exception]] = []
    key_paths = _key_paths(prepared)
    sources = [read_attributes(path) for path in key_paths]  # their pixel data stays on disk
    for source in sources:  # what the objects copy from them is made valid first (never copied invalid)
        repair_header(source)
    given = report_context(prepared)
    objects = _dicom_objects(read, key_paths, sources, provenance, study_version,
                             ObjectOptions(secondary_capture, pdf_report),
                             [previous_sr] if previous_sr is not None else [], given, omitted, created)
    written = []
    for name, dataset in objects:
        settle(dataset, created)
        write_atomically(directory / name, _dataset_bytes(dataset, node_version))
        written.append(WrittenObject(directory / name, str(dataset.SOPInstanceUID)))
    sr = dict(objects)[SR_FILE]
    key = result_key(prepared.study_uid, study_version, prepared.task.domain)
    header = sources[0]  # patient, order, study
    messages = {}
    for name, party in parties.items():
        try:
            oru = build_oru(read.findings, header, provenance, party, key, sr_sop_instance_uid=str(sr.SOPInstanceUID),
                            now=created, corrects_earlier=previous_sr is not None, critical_labels=critical_labels,
                            inputs=given.inputs if given.any else ())
        except NoPatientIdentifier as exc:  # held: named in ``omitted`` (logged, counted), the rest is sent
            omitted.append(("oru", exc))
            continue
        path = directory / f"{name}.hl7"
        write_atomically(path, oru.encode("utf-8"))
        messages[name] = (path, control_id(key))
    fsync_dir(directory)
    return ResultSet(tuple(written), messages, tuple(omitted))
