"""Gathering a study's patient context by its task's policy: the order (by accession, placer or filler
number), the latest laboratory results by code, the most recent prior studies and an ECG near the
study — from what the node holds and, when ``context.pacs`` is set, from the PACS (C-FIND/C-GET) or DICOMweb
archive (QIDO-RS/WADO-RS) it names (retrieved once,
kept apart under ``storage.root/context/``). A PACS that cannot be reached costs the priors, never
the read: the study goes on with what there is, and the metrics say so."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

from node.context.missing import Missing, missing_context
from node.context.pacs import FoundStudy, PriorsSource
from node.dicom_files import read_attributes
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.routing import ContextPolicy
from node.routing.orders import dataset_patient_key, order_numbers
from node.store import Store
from node.store.clinical import KnownStudy, LabResult, Order

log = get_logger("context")

RETRIEVED_DIR = "context"
DAY = 86_400.0
_HEADER_TAGS = ["StudyInstanceUID", "PatientID", "IssuerOfPatientID", "AccessionNumber", "Modality", "StudyDate",
                "StudyTime", "StudyDescription", "RequestAttributesSequence"]


def dicom_time(study_date: str, study_time: str = "") -> float | None:
    """DICOM DA + TM (local time, as the modality wrote it) as epoch seconds; None without a valid date."""
    digits = re.sub(r"\D", "", study_date)[:8] + re.sub(r"[^\d]", "", study_time.split(".")[0])[:6].ljust(6, "0")
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S").astimezone().timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class StudyIdentity:
    """Who and what a study is, for finding its context (the patient ID is for the PACS query only)."""

    study_uid: str
    patient_id: str
    patient_key: str
    order_numbers: tuple[str, ...]  # accession, placer and filler order numbers
    modality: str
    study_time: float | None
    description: str
    authority: str = ""  # the patient key's: the study's IssuerOfPatientID, else context.default_authority

    @classmethod
    def read(cls, path: Path, default_authority: str) -> StudyIdentity:
        """The identity in one instance's header."""
        ds = read_attributes(path, _HEADER_TAGS)
        authority = str(ds.get("IssuerOfPatientID", "") or "").strip() or default_authority
        return cls(str(ds.StudyInstanceUID), str(ds.get("PatientID", "") or ""),
                   dataset_patient_key(ds, default_authority), order_numbers(ds), str(ds.get("Modality", "") or ""),
                   dicom_time(str(ds.get("StudyDate", "") or ""), str(ds.get("StudyTime", "") or "")),
                   str(ds.get("StudyDescription", "") or ""), authority)


@dataclass(frozen=True)
class RelatedStudy:
    """A prior study or an ECG given to the model with the study: its files and how many images it gave."""

    study_uid: str
    modality: str
    study_time: float | None
    description: str
    files: tuple[Path, ...]
    retrieved: bool  # from the PACS (else a study the node received)
    image_count: int = 0


@dataclass(frozen=True)
class PatientContext:
    """Everything gathered for one study (nothing when its task asks for nothing)."""

    study_time: float | None = None
    order: Order | None = None
    labs: tuple[LabResult, ...] = ()
    priors: tuple[RelatedStudy, ...] = ()
    ecg: RelatedStudy | None = None
    order_wanted: bool = False
    missing: tuple[Missing, ...] = ()  # the order or labs asked for that are not here, and why

    @property
    def given(self) -> bool:
        """Whether any context goes with the study."""
        return bool(self.order or self.labs or self.priors or self.ecg)


def _modalities(text: str) -> set[str]:
    return {m.strip().upper() for m in text.split(",") if m.strip()}


class ContextGatherer:
    """Finds the context of studies in the store and, when configured, the PACS."""

    def __init__(self, store: Store, root: Path, default_authority: str, pacs: PriorsSource | None = None,
                 metrics: Metrics | None = None) -> None:
        self._store, self._root, self._authority = store, root, default_authority
        self._pacs, self._metrics = pacs, metrics

    def close(self) -> None:
        """Close the PACS or archive client's connections (the node is stopping)."""
        if self._pacs is not None:
            self._pacs.close()

    def identify(self, files: Sequence[Path], now: float) -> StudyIdentity:
        """Read a received study's identity and remember it as one of its patient's studies."""
        identity = StudyIdentity.read(files[0], self._authority)
        if identity.patient_key:
            self._store.clinical.know_study(KnownStudy(
                identity.study_uid, identity.patient_key, identity.order_numbers[0] if identity.order_numbers else "",
                identity.modality, identity.study_time, identity.description, None), now)
        return identity

    def gather(self, identity: StudyIdentity, policy: ContextPolicy, takes_ecg: bool, now: float,
               ask_pacs: bool = True) -> PatientContext:
        """The context ``policy`` asks for (an ECG only when the model takes one); with ``ask_pacs`` False,
        only what the node holds (the PACS is not asked)."""
        at = identity.study_time if identity.study_time is not None else now
        context = PatientContext(identity.study_time, order_wanted=policy.order)
        if not identity.patient_key or not policy.wants_anything:
            return replace(context, missing=self._missing(identity, policy, None, ()))
        clinical = self._store.clinical
        order = clinical.order_for(identity.patient_key, identity.order_numbers) if policy.order else None
        labs = tuple(clinical.lab_results(identity.patient_key, policy.labs.loinc, at - policy.labs.hours * 3600, at)
                     ) if policy.labs else ()
        ecg_policy = policy.ecg if takes_ecg else None
        prior_modalities = {m.upper() for m in policy.priors.modality} if policy.priors else set()
        if ask_pacs and self._pacs is not None and (policy.priors or ecg_policy):
            days_back = max(policy.priors.days if policy.priors else 0, ecg_policy.hours / 24 if ecg_policy else 0)
            days_on = ecg_policy.hours / 24 if ecg_policy else 0
            wanted = prior_modalities | ({"ECG"} if ecg_policy else set())  # an ECG only for a model that takes it
            self._retrieve_from_pacs(identity, at - days_back * DAY, at + days_on * DAY, wanted, now)
        known = [s for s in clinical.studies_of(identity.patient_key) if s.study_uid != identity.study_uid]
        priors: list[RelatedStudy] = []
        if policy.priors:
            earliest = at - policy.priors.days * DAY
            candidates = [s for s in known if _modalities(s.modality) & prior_modalities and s.study_time is not None
                          and earliest <= s.study_time < at]
            priors = [self._related(s) for s in candidates[: policy.priors.count]]
        ecg = None
        if ecg_policy:
            distances = [(abs(s.study_time - at), s) for s in known
                         if "ECG" in _modalities(s.modality) and s.study_time is not None]
            near = sorted((pair for pair in distances if pair[0] <= ecg_policy.hours * 3600), key=lambda pair: pair[0])
            ecg = self._related(near[0][1]) if near else None
        used = [s.study_uid for s in priors] + ([ecg.study_uid] if ecg else [])
        if used:
            clinical.mark_used(used, now)
        return replace(context, order=order, labs=labs, priors=tuple(p for p in priors if p.files), ecg=ecg,
                       missing=self._missing(identity, policy, order, labs))

    def _missing(self, identity: StudyIdentity, policy: ContextPolicy, order: Order | None,
                 labs: Sequence[LabResult]) -> tuple[Missing, ...]:
        """What of the order and labs asked for is missing, and why: logged and counted (no patient data)."""
        missing = missing_context(self._store.clinical, policy, identity.patient_key, identity.authority,
                                  identity.order_numbers, order is not None, bool(labs))
        for item in missing:
            log.info("context.missing", study=uid_hash(identity.study_uid), item=item.item, reason=item.reason)
            if self._metrics is not None:
                self._metrics.context_missing.labels(item.item, item.reason).inc()
        return missing

    def _related(self, study: KnownStudy) -> RelatedStudy:
        if study.retrieved is not None:
            files = tuple(sorted((self._root / study.retrieved).glob("*.dcm")))
        else:
            files = tuple(self._store.instances.study_files(study.study_uid))
        return RelatedStudy(study.study_uid, study.modality, study.study_time, study.description, files,
                            study.retrieved is not None)

    def _retrieve_from_pacs(self, identity: StudyIdentity, since: float, until: float, wanted: set[str],
                            now: float) -> None:
        """Retrieve the patient's studies of the ``wanted`` modalities that the node does not know yet."""
        assert self._pacs is not None
        try:
            found = self._pacs.find(identity.patient_id, date.fromtimestamp(since), date.fromtimestamp(until))
        except Exception as exc:  # the PACS is outside: whatever fails there costs the priors, never the read
            self._failed("find", identity.study_uid, exc)
            return
        known = {s.study_uid for s in self._store.clinical.studies_of(identity.patient_key)}
        for study in found:
            if study.study_uid == identity.study_uid or study.study_uid in known or not set(study.modalities) & wanted:
                continue
            self._retrieve(identity, study, now)

    def _retrieve(self, identity: StudyIdentity, study: FoundStudy, now: float) -> None:
        folder = Path(RETRIEVED_DIR) / study.study_uid
        assert self._pacs is not None
        try:
            files = self._pacs.retrieve(study.study_uid, self._root / folder)
        except Exception as exc:  # as above; a half-retrieved study is not recorded, and is tried again later
            self._failed("retrieve", identity.study_uid, exc)
            return
        if not files:
            return
        self._store.clinical.know_study(KnownStudy(
            study.study_uid, identity.patient_key, study.accession, ",".join(study.modalities),
            dicom_time(study.study_date, study.study_time), study.description, str(folder)), now)
        if self._metrics is not None:
            self._metrics.priors_retrieved.inc()
        log.info("context.prior_retrieved", study=uid_hash(identity.study_uid), prior=uid_hash(study.study_uid),
                 instances=len(files))

    def pacs_timed_out(self, study_uid: str) -> None:
        """Count and log a study whose gathering outlasted its time (``context.gather_seconds``)."""
        self._failed("timeout", study_uid, TimeoutError())

    def _failed(self, step: str, study_uid: str, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.prior_retrieval_failures.labels(step).inc()
        log.warning("context.pacs_failed", step=step, study=uid_hash(study_uid), error=type(exc).__name__)
