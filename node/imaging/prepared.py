"""The imaging stage: a study with its context → what the model is given (:class:`Prepared`).

The study's own images first, then its priors' images, within the model's image limit; for a model that
takes one, the ECG signal (the study's own, else the context's ECG near it). Each image is made as the
model's family was trained (``node.imaging.inputs``), with the geometry its boxes are mapped back through.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from node.config import ImagingConfig
from node.context.gather import PatientContext, RelatedStudy
from node.context.gathered import Gathered
from node.imaging.decode import ImagingError
from node.imaging.ecg_signal import SignalInput, ecg_signal
from node.imaging.inputs import ModelInput, NotForModel, StudyInputs, study_inputs
from node.model.profiles import ModelProfile
from node.ops.logging import get_logger, uid_hash
from node.ops.memory import release_memory
from node.routing import Routed, Skipped, Task, skip

log = get_logger("imaging")

#: Why a study with no pixel data or waveform (only reports, PDFs, ...) is not read.
NO_IMAGE = "no image in the study"


@dataclass(frozen=True)
class Prepared:
    """A study ready for the engine: its task, the context given with it, and its model inputs (its own
    images, then its priors'), with what every result must say about them."""

    routed: Routed
    context: PatientContext  # the order, labs, priors (those whose images are given) and ECG given with it
    inputs: tuple[ModelInput, ...]
    signals: tuple[SignalInput, ...] = ()  # ECG signals given to the model (Omni)
    caveats: tuple[str, ...] = ()  # what every result must say (e.g. an ECG shown as an image)

    @property
    def study_uid(self) -> str:
        """The study's Study Instance UID."""
        return self.routed.study_uid

    @property
    def task(self) -> Task:
        """The task the study was routed to."""
        return self.routed.task

    @property
    def files(self) -> tuple[Path, ...]:
        """The study's stored instances."""
        return self.routed.files

    @property
    def current_images(self) -> int:
        """How many of ``inputs`` are the study's own (the priors' images follow them)."""
        return len(self.inputs) - sum(prior.image_count for prior in self.context.priors)


def prepare(gathered: Gathered, profile: ModelProfile, imaging: ImagingConfig) -> Prepared | Skipped:
    """The imaging stage: the study's inputs as ``profile``'s family was trained on them, with its priors'
    images and ECG from the context. Skipped when it holds nothing the model takes (settled at once);
    :class:`ImagingError` (permanent) when none of its key images can be decoded."""
    try:
        return _prepare(gathered, profile, imaging)
    finally:  # a big study's decoded pixels are freed: the allocator gives their pages back
        release_memory()


def _prepare(gathered: Gathered, profile: ModelProfile, imaging: ImagingConfig) -> Prepared | Skipped:
    """:func:`prepare`, before the memory it used is handed back."""
    routed = gathered.routed
    spec = routed.task.spec
    try:
        made = study_inputs(routed.files, profile, imaging.max_images, spec.volume_frames or imaging.volume_frames,
                            spec.default_window, spec.trained_windows, imaging.ecg_as_image)
    except NotForModel as exc:
        return skip(routed.study_uid, routed.files, str(exc), "imaging")
    if not made.images and not made.signals:
        return skip(routed.study_uid, routed.files, NO_IMAGE, "imaging")
    made, context = _with_context(made, gathered.context, profile, imaging, routed)
    log.info("study.prepared", study=uid_hash(routed.study_uid), domain=routed.task.domain, task=routed.task.name,
             images=len(made.images), signals=len(made.signals), priors=len(context.priors),
             order=context.order is not None, labs=len(context.labs), ecg=context.ecg is not None)
    return Prepared(routed, context, made.images, made.signals, made.caveats)


def _with_context(made: StudyInputs, context: PatientContext, profile: ModelProfile, imaging: ImagingConfig,
                  routed: Routed) -> tuple[StudyInputs, PatientContext]:
    """The study's inputs with its priors' images after its own (as many as the image limit leaves room
    for; a prior that cannot be read is left out) and the context's ECG signal when the study has none."""
    spec = routed.task.spec
    images, priors = list(made.images), []
    limit = min(imaging.max_images, profile.max_images)
    for prior in context.priors:
        room = limit - len(images)
        if room <= 0:
            break
        try:
            prior_images = study_inputs(prior.files, profile, room, spec.volume_frames or imaging.volume_frames,
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
