"""A validation run: the studies of a folder that the reference CSV names, checked against it first, then
through ``serve``'s path — route → gather → image (:func:`node.chain.prepare_study`) → read
(:func:`node.reading.read_batch`, engine from :func:`node.engine_host.build_engine`) — in batches of
``pipeline.batch_size``, each answer kept so that a second run asks the engine only for what is new."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.app import build_router
from node.chain import prepare_study
from node.config import NodeConfig
from node.context.gather import ContextGatherer
from node.dicom_files import read_attributes
from node.engine import GenerationSettings
from node.engine_host import LoadedEngine, build_engine
from node.errors import NodeError, reason
from node.evaluation.cache import Answer, AnswerCache, answer_key
from node.evaluation.progress import Progress
from node.evaluation.references import LabelsError, Reference, check_labels, match_studies, read_references
from node.imaging.prepared import Prepared
from node.offline import group_by_study, offline_context
from node.reading import Read, engine_request, read_batch, read_from_text
from node.routing import DomainSpec, Routed, Router, Skipped, route


@dataclass(frozen=True)
class Outcome:
    """One labelled study's end: its task (None when routing sent it nowhere) and its read, or why not."""

    study: str  # as the reference CSV names it
    reference: Reference
    task: str | None
    read: Read | None = None
    skipped: str | None = None
    failed: str | None = None


@dataclass(frozen=True)
class Run:
    """Every labelled study's outcome, the model that read them and how many the engine was asked of."""

    outcomes: tuple[Outcome, ...]
    model: str
    engine_calls: int
    tasks: Mapping[str, DomainSpec]  # the routing rules' tasks, in their order


def _routes(studies: Mapping[str, list[Path]], references: Mapping[str, Reference],
            router: Router) -> dict[str, Routed | Skipped]:
    routes: dict[str, Routed | Skipped] = {}
    for uid in references:
        try:
            routes[uid] = route(uid, studies[uid], router)
        except NodeError as exc:
            routes[uid] = Skipped(uid, tuple(studies[uid]), f"unreadable: {reason(exc)}", "routing")
    return routes


@dataclass(frozen=True)
class Checked:
    """The folder's studies (files per Study Instance UID), the labelled ones' references and routes."""

    studies: Mapping[str, list[Path]]
    references: Mapping[str, Reference]  # by Study Instance UID, labels spelled as the task's closed set
    routes: Mapping[str, Routed | Skipped]
    router: Router


def checked_references(config: NodeConfig, folder: Path, labels: Path) -> Checked:
    """The CSV's references matched to the folder's studies, each routed (on its headers) and its labels checked
    against its task's closed set (any task's, for a study routing sends nowhere). Unknown studies or labels
    raise :class:`node.evaluation.references.LabelsError`, listing them all, before any image is read."""
    references = read_references(labels)
    studies, unreadable = group_by_study([folder])
    for problem in unreadable:
        print(f"qoq-node: {problem}", file=sys.stderr)
    accessions = {uid: str(read_attributes(files[0], ["AccessionNumber"]).get("AccessionNumber", "")).strip()
                  for uid, files in studies.items()}
    matched, problems = match_studies(references, accessions)
    router = build_router(config)
    routes = _routes(studies, matched, router)
    every_label = tuple(dict.fromkeys(label for spec in router.rules.domains.values() for label in spec.labels))
    closed = {uid: r.task.spec.labels if isinstance(r, Routed) else every_label for uid, r in routes.items()}
    checked, label_problems = check_labels(matched, closed)
    if problems or label_problems:
        raise LabelsError(f"labels {labels}: " + "; ".join(problems + label_problems))
    unlabelled = len(studies) - len(matched)
    if unlabelled:
        print(f"qoq-node: {unlabelled} studies in {folder} have no row in {labels} and are not evaluated",
              file=sys.stderr)
    return Checked(studies, checked, routes, router)


def _read(batch: list[Prepared], loaded: LoadedEngine, settings: GenerationSettings,
          cache: AnswerCache) -> tuple[dict[str, Read], int]:
    """The batch's reads: kept answers from the cache, the rest from one engine batch (then kept)."""
    model = loaded.engine.model_identity
    keys = {p.study_uid: answer_key(p.study_uid, model, engine_request(p, settings)) for p in batch}
    reads: dict[str, Read] = {}
    for prepared in batch:
        kept = cache.get(keys[prepared.study_uid])
        if kept is not None:
            reads[prepared.study_uid] = read_from_text(prepared, kept.text, kept.model, kept.is_test_result)
    asked = [p for p in batch if p.study_uid not in reads]
    for read in read_batch(asked, loaded.engine, settings) if asked else []:
        uid = read.prepared.study_uid
        cache.put(keys[uid], Answer(read.findings.raw_text, read.model, read.is_test_result))
        reads[uid] = read
    return reads, len(asked)


def _outcome(uid: str, reference: Reference, routed: Routed | Skipped, prepared: Prepared | Skipped | str,
             reads: Mapping[str, Read]) -> Outcome:
    if isinstance(routed, Skipped):
        return Outcome(reference.study, reference, None, skipped=routed.reason)
    task = routed.task.name
    if isinstance(prepared, str):
        return Outcome(reference.study, reference, task, failed=prepared)
    if isinstance(prepared, Skipped):
        return Outcome(reference.study, reference, task, skipped=prepared.reason)
    return Outcome(reference.study, reference, task, read=reads[uid])


def evaluate(config: NodeConfig, folder: Path, labels: Path, out: Path, context: Path | None = None) -> Run:
    """Check the CSV against the folder, then read its studies through the node's path (answers kept under
    ``out/answers``); a study that cannot be read is reported with its reason and the others go on."""
    checked = checked_references(config, folder, labels)
    studies, references, routes, router = checked.studies, checked.references, checked.routes, checked.router
    loaded = build_engine(config, test_model_when_unset=False)
    settings = GenerationSettings(max_new_tokens=config.engine.max_new_tokens, temperature=config.engine.temperature)
    cache = AnswerCache(out / "answers")
    uids, size = list(references), config.pipeline.batch_size
    outcomes, calls = [], 0
    progress = Progress(len(uids))
    try:
        with offline_context(context, config) as gatherer:
            for start in range(0, len(uids), size):
                batch = uids[start:start + size]
                prepared = {uid: _prepare(uid, studies[uid], routes[uid], router, config, loaded, gatherer)
                            for uid in batch}
                reads, asked = _read([p for p in prepared.values() if isinstance(p, Prepared)], loaded, settings,
                                     cache)
                calls += asked
                outcomes += [_outcome(uid, references[uid], routes[uid], prepared[uid], reads) for uid in batch]
                progress.advance(len(batch))
    finally:
        progress.close()
    return Run(tuple(outcomes), loaded.engine.model_identity, calls, dict(router.rules.domains))


def _prepare(uid: str, files: Sequence[Path], routed: Routed | Skipped, router: Router, config: NodeConfig,
             loaded: LoadedEngine, gatherer: ContextGatherer | None) -> Prepared | Skipped | str:
    """The study through route → gather → image (a failure: its reason); a study routing skipped, as it is."""
    if isinstance(routed, Skipped):
        return routed
    try:
        return prepare_study(uid, files, router, config.imaging, loaded.profile, gatherer)
    except NodeError as exc:  # a data fault: this study is reported, the others go on
        return reason(exc)
