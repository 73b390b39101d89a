"""Offline inference on DICOM files: routing → imaging → engine → findings, study by study.

This is what ``qoq-node infer`` runs; the node's pipeline runs the same stages on stable
studies. A study that cannot be read is reported with its reason; the others go on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from pydicom.errors import InvalidDicomError

from node.config import NodeConfig
from node.context.gather import ContextGatherer, PatientContext, RelatedStudy
from node.context.text import context_text
from node.dicom_files import read_attributes
from node.engine import Engine, EngineRequest, GenerationSettings
from node.engine.prompt import build_prompt
from node.findings import Findings, locate, parse_output
from node.imaging.decode import ImagingError
from node.imaging.ecg_signal import SignalInput, ecg_signal
from node.imaging.inputs import ModelInput, NotForModel, StudyInputs, study_inputs
from node.model.profiles import ModelProfile
from node.ops.logging import get_logger, uid_hash
from node.routing import DomainSpec, Router, StudyHeader, Task

log = get_logger("infer")

#: Why a study with no pixel data or waveform (only reports, PDFs, ...) is not read.
NO_IMAGE = "no image in the study"


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
    final_skip: bool = False  # the skip will recur on every read (nothing the model takes): settled at once
    signals: tuple[SignalInput, ...] = ()  # ECG signals given to the model (Omni)
    caveats: tuple[str, ...] = ()  # what every result of the study must say (e.g. an ECG shown as an image)
    analysed_at: datetime | None = None  # when the engine was given the study (the SR's Content Date/Time)
    context: PatientContext = field(default_factory=PatientContext)  # the order, labs, priors and ECG given with it
    current_images: int = 0  # how many of ``inputs`` are the study's own (the priors' images follow them)
    modality: str = ""

    @property
    def readable(self) -> bool:
        """Whether the study has a task and something for the model."""
        return self.task is not None and bool(self.inputs or self.signals)


def group_by_study(paths: Iterable[Path]) -> tuple[dict[str, list[Path]], list[str]]:
    """Files (folders searched recursively) grouped by Study Instance UID; and what was not DICOM."""
    studies: dict[str, list[Path]] = defaultdict(list)
    problems = []
    for path in paths:
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            try:
                ds = read_attributes(file, ["StudyInstanceUID"])
                studies[str(ds.StudyInstanceUID)].append(file)
            except (InvalidDicomError, AttributeError, OSError) as exc:
                problems.append(f"{file}: not a readable DICOM instance ({type(exc).__name__})")
    return dict(studies), problems


def prepare(study_uid: str, files: Sequence[Path], router: Router, config: NodeConfig,
            profile: ModelProfile, gatherer: ContextGatherer | None = None, now: float | None = None) -> StudyOutcome:
    """Route one study, gather its patient context by the task's policy (with ``gatherer``) and make its
    inputs as ``profile``'s family was trained on them (no model yet): the study's own images first,
    then the priors' images, within the model's image limit; the ECG signal near it for a model that
    takes one."""
    header = _routing_header(files)
    routed = router.route(header)
    if isinstance(routed, str):
        return _skipped(StudyOutcome(study_uid, tuple(files), skipped=routed, final_skip=True), "routing")
    spec = routed.spec
    context = PatientContext()
    if gatherer is not None:
        now = now if now is not None else datetime.now().timestamp()
        context = gatherer.gather(gatherer.identify(files, now), spec.context, profile.takes_time_series, now)
    try:
        made = study_inputs(files, profile, config.imaging.max_images,
                            spec.volume_frames or config.imaging.volume_frames, spec.default_window,
                            spec.trained_windows, config.imaging.ecg_as_image)
    except NotForModel as exc:
        return _skipped(StudyOutcome(study_uid, tuple(files), routed, skipped=str(exc), final_skip=True), "imaging")
    except ImagingError as exc:
        return _skipped(StudyOutcome(study_uid, tuple(files), routed, skipped=str(exc)), "imaging")
    if not made.images and not made.signals:
        return _skipped(StudyOutcome(study_uid, tuple(files), routed, skipped=NO_IMAGE, final_skip=True), "imaging")
    made, context = _with_context(made, context, profile, config, spec)
    log.info("study.prepared", study=uid_hash(study_uid), domain=routed.domain, task=routed.name,
             images=len(made.images), signals=len(made.signals), priors=len(context.priors),
             order=context.order is not None, labs=len(context.labs), ecg=context.ecg is not None)
    return StudyOutcome(study_uid, tuple(files), routed, made.images, signals=made.signals, caveats=made.caveats,
                        context=context, current_images=len(made.images) - sum(p.image_count for p in context.priors),
                        modality=header.modality)


#: Modalities of instances that are not images or waveforms (reports, presentation states, key objects,
#: segmentations, registrations, documents): a study is not routed by them.
NOT_READ_MODALITIES = frozenset({"SR", "PR", "KO", "SEG", "REG", "DOC", "RWV", "PLAN", "FID"})


def _routing_header(files: Sequence[Path]) -> StudyHeader:
    """The routing attributes of the study's first image or waveform instance, in arrival order (a dose
    report or another system's SR that arrived first does not decide the study's task); the first
    instance's when the study has none."""
    headers = (StudyHeader.read(path) for path in files)
    first = None
    for header in headers:
        if header.modality.strip().upper() not in NOT_READ_MODALITIES:
            return header
        first = first or header
    assert first is not None
    return first


def _with_context(made: StudyInputs, context: PatientContext, profile: ModelProfile, config: NodeConfig,
                  spec: DomainSpec) -> tuple[StudyInputs, PatientContext]:
    """The study's inputs with its priors' images after its own (as many as the image limit leaves room
    for; a prior that cannot be read is left out) and the context's ECG signal when the study has none."""
    images, priors = list(made.images), []
    limit = min(config.imaging.max_images, profile.max_images)
    for prior in context.priors:
        room = limit - len(images)
        if room <= 0:
            break
        try:
            prior_images = study_inputs(prior.files, profile, room, spec.volume_frames or config.imaging.volume_frames,
                                        spec.default_window, spec.trained_windows).images
        except ImagingError:
            continue
        if prior_images:
            images.extend(prior_images)
            priors.append(replace(prior, image_count=len(prior_images)))
    signals, ecg = made.signals, None
    if context.ecg is not None and profile.takes_time_series and not made.signals:
        signals = _ecg_of(context.ecg)
        ecg = context.ecg if signals else None
    return replace(made, images=tuple(images), signals=signals), replace(context, priors=tuple(priors), ecg=ecg)


def _ecg_of(study: RelatedStudy) -> tuple[SignalInput, ...]:
    """The signal of a related ECG study's first waveform (none when it cannot be read)."""
    for path in study.files:
        try:
            return (ecg_signal(path),)
        except (ImagingError, AttributeError, ValueError):
            continue
    return ()


def engine_request(study: StudyOutcome, settings: GenerationSettings) -> EngineRequest:
    """The request for one prepared study: its images (its own, then its priors'), the task's training
    question with one image marker per image and the patient's context before it, and its ECG signal."""
    assert study.task is not None
    context = context_text(study.context, study.current_images, study.modality, bool(study.signals))
    return EngineRequest(
        tuple(model_input.image for model_input in study.inputs),
        build_prompt(study.task.spec.prompt_question, len(study.inputs), context),
        study.task.domain,
        settings,
        tuple(signal.signal for signal in study.signals),
    )


def _skipped(outcome: StudyOutcome, stage: str) -> StudyOutcome:
    # The reason may name files, which may name patients: it goes to the operator's output only.
    log.warning("study.skipped", study=uid_hash(outcome.study_uid), stage=stage)
    return outcome


def infer(prepared: Sequence[StudyOutcome], engine: Engine, config: NodeConfig) -> list[StudyOutcome]:
    """Run the engine on every prepared study (one batch) and read its findings."""
    ready = [study for study in prepared if study.readable]
    settings = GenerationSettings(max_new_tokens=config.engine.max_new_tokens, temperature=config.engine.temperature)
    analysed_at = datetime.now().astimezone()
    results = iter(engine.generate([engine_request(study, settings) for study in ready]))
    outcomes = []
    for study in prepared:  # results come in the order of ``ready``, a subsequence of ``prepared``
        if study.readable:
            result = next(results)
            findings = locate(parse_output(result.text), [m.geometry for m in study.inputs])
            study = replace(study, findings=findings, model=result.model, is_test_result=result.is_test_result,
                            analysed_at=analysed_at)
        outcomes.append(study)
    return outcomes
