"""Offline inference on DICOM files: routing → imaging → engine → findings, study by study.

This is what ``qoq-node infer`` runs; the node's pipeline runs the same stages on stable
studies. A study that cannot be read is reported with its reason; the others go on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.config import NodeConfig
from node.engine import Engine, EngineRequest, GenerationSettings
from node.engine.prompt import build_prompt
from node.findings import Findings, locate, parse_output
from node.imaging.decode import ImagingError, iter_frames
from node.imaging.inputs import ModelInput, study_inputs
from node.ops.logging import get_logger, uid_hash
from node.results.gsps import build_presentation_state
from node.results.hl7 import Hl7Party, build_oru
from node.results.provenance import Provenance
from node.results.sc import build_sc
from node.results.seg import build_seg
from node.results.sr import build_sr
from node.routing import Router, StudyHeader, Task

log = get_logger("infer")


@dataclass(frozen=True)
class StudyOutcome:
    """One study's result, or why there is none."""

    study_uid: str
    files: tuple[Path, ...]
    task: Task | None = None
    inputs: tuple[ModelInput, ...] = ()
    findings: Findings | None = None
    model: str = ""
    is_test_result: bool = False
    skipped: str = ""


def group_by_study(paths: Iterable[Path]) -> tuple[dict[str, list[Path]], list[str]]:
    """Files (folders searched recursively) grouped by Study Instance UID; and what was not DICOM."""
    studies: dict[str, list[Path]] = defaultdict(list)
    problems = []
    for path in paths:
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            try:
                ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                studies[str(ds.StudyInstanceUID)].append(file)
            except (InvalidDicomError, AttributeError, OSError) as exc:
                problems.append(f"{file}: not a readable DICOM instance ({type(exc).__name__})")
    return dict(studies), problems


def prepare(study_uid: str, files: Sequence[Path], router: Router, config: NodeConfig) -> StudyOutcome:
    """Route and image one study (no model yet)."""
    routed = router.route(StudyHeader.read(files[0]))
    if isinstance(routed, str):
        return _skipped(StudyOutcome(study_uid, tuple(files), skipped=routed), "routing")
    try:
        inputs = study_inputs(files, config.imaging.max_images, config.engine.min_pixels, config.engine.max_pixels,
                              routed.spec.default_window)
    except ImagingError as exc:
        return _skipped(StudyOutcome(study_uid, tuple(files), routed, skipped=str(exc)), "imaging")
    if not inputs:
        return _skipped(StudyOutcome(study_uid, tuple(files), routed, skipped="no image in the study"), "imaging")
    log.info("study.prepared", study=uid_hash(study_uid), domain=routed.domain, images=len(inputs))
    return StudyOutcome(study_uid, tuple(files), routed, tuple(inputs))


def _skipped(outcome: StudyOutcome, stage: str) -> StudyOutcome:
    # The reason may name files, which may name patients: it goes to the operator's output only.
    log.warning("study.skipped", study=uid_hash(outcome.study_uid), stage=stage)
    return outcome


def infer(prepared: Sequence[StudyOutcome], engine: Engine, config: NodeConfig) -> list[StudyOutcome]:
    """Run the engine on every prepared study (one batch) and read its findings."""
    ready = [study for study in prepared if study.task is not None and study.inputs]
    settings = GenerationSettings(max_new_tokens=config.engine.max_new_tokens)
    requests = [
        EngineRequest(
            tuple(model_input.image for model_input in study.inputs),
            build_prompt(study.task.spec.question, study.task.spec.labels, study.task.spec.ask_boxes,
                         len(study.inputs)),
            study.task.domain,
            settings,
        )
        for study in ready
    ]
    results = iter(engine.generate(requests))
    outcomes = []
    for study in prepared:  # results come in the order of ``ready``, a subsequence of ``prepared``
        if study.task is not None and study.inputs:
            result = next(results)
            findings = locate(parse_output(result.text), [m.geometry for m in study.inputs])
            study = StudyOutcome(study.study_uid, study.files, study.task, study.inputs, findings, result.model,
                                 result.is_test_result)
        outcomes.append(study)
    return outcomes


def write_results(
    outcome: StudyOutcome, directory: Path, party: Hl7Party, secondary_capture: bool = False
) -> list[Path]:
    """Write a read study's results into ``directory/<study UID>/``: the SR, SEG and presentation
    state (GSPS, or CSPS for colour images) over its key images, optionally burned-in SCs, and the
    ORU^R01 message. Returns the files written."""
    if outcome.findings is None or outcome.task is None:
        return []
    findings, task = outcome.findings, outcome.task.domain
    provenance = Provenance(outcome.model, outcome.is_test_result)
    target = directory / outcome.study_uid
    target.mkdir(parents=True, exist_ok=True)
    key_uids = {p.source.sop_instance_uid for m in outcome.inputs for p in m.geometry.placements}
    key_paths = [path for path in outcome.files
                 if str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) in key_uids]
    sources = [pydicom.dcmread(path) for path in key_paths]
    objects: list[tuple[str, Dataset | None]] = []
    if sources:
        objects.append(("sr.dcm", build_sr(findings, sources, provenance, 1, task)))
        objects.append(("seg.dcm", build_seg(findings, sources, provenance, 1, task)))
        images = [ds for ds in sources if "PixelData" in ds]
        if images:  # one presentation state over the images of the first one's kind (grey or colour)
            colour = int(images[0].get("SamplesPerPixel", 1)) > 1
            same_kind = [ds for ds in images if (int(ds.get("SamplesPerPixel", 1)) > 1) == colour]
            window = next((m.window for m in outcome.inputs if m.window is not None), None)
            objects.append(("csps.dcm" if colour else "gsps.dcm",
                            build_presentation_state(findings, same_kind, provenance, 1, task, window)))
    if secondary_capture:
        key_frames = {(p.source.sop_instance_uid, p.source.frame)
                      for m in outcome.inputs for p in m.geometry.placements}
        for path, ds in zip(key_paths, sources, strict=True):
            if "PixelData" not in ds:
                continue
            for frame in iter_frames(path):
                if (frame.source.sop_instance_uid, frame.source.frame) in key_frames:
                    number = sum(name.startswith("sc-") for name, _ in objects) + 1
                    objects.append((f"sc-{number}.dcm", build_sc(frame, ds, findings, provenance, 1, task)))
    written = []
    for name, dataset in objects:
        if dataset is not None:
            written.append(target / name)
            dataset.save_as(written[-1], enforce_file_format=True)
    sr = dict(objects).get("sr.dcm")
    header = sources[0] if sources else pydicom.dcmread(outcome.files[0], stop_before_pixels=True)
    oru = build_oru(findings, header, provenance, party, f"{outcome.study_uid}/1/{task}",
                    sr_sop_instance_uid=str(sr.SOPInstanceUID) if sr is not None else None)
    written.append(target / "oru.hl7")
    written[-1].write_bytes(oru.encode("utf-8"))
    return written
