"""``qoq-node infer``: the node's chain on DICOM files, offline — route → gather → image → read → results.

Files are grouped by study; what ``serve`` does not read (``node.ignored``: SR, SEG, PR, KO, the node's own
results) is left out, each file named on stderr. A study that cannot be read — or whose results cannot be
written — is reported with its reason (a library error by its type only) and the others go on; the command
exits non-zero at the end when any study failed or no study was found.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from node.app import build_router
from node.chain import prepare_study
from node.config import NodeConfig
from node.context.gather import ContextGatherer
from node.context.overview import load_messages
from node.dicom_files import read_attributes
from node.engine import Engine, GenerationSettings
from node.engine_host import build_engine
from node.errors import NodeError, reason
from node.ignored import why_not_read
from node.imaging.prepared import Prepared
from node.ops.logging import get_logger, uid_hash
from node.reading import Read, prompt_context, read_batch
from node.results.hl7 import Hl7Party
from node.results.writer import write_results
from node.routing import Skipped
from node.store import Store

log = get_logger("offline")

#: One study's end offline: read, skipped, or (study UID, why it failed).
Outcome = Read | Skipped | tuple[str, str]


def group_by_study(paths: Iterable[Path], ignored_sop_classes: Collection[str] = ()
                   ) -> tuple[dict[str, list[Path]], list[str]]:
    """Files (folders searched recursively) grouped by Study Instance UID, without those the node does not
    read (:func:`node.ignored.why_not_read`); and a note on each file left out (not DICOM, or not read)."""
    studies: dict[str, list[Path]] = defaultdict(list)
    problems = []
    for path in paths:
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            try:
                ds = read_attributes(file, ["StudyInstanceUID", "SOPClassUID", "Manufacturer"])
                ignored = why_not_read(str(ds.get("SOPClassUID", "")), str(ds.get("Manufacturer", "")),
                                       ignored_sop_classes)
                study_uid = str(ds.StudyInstanceUID)
            except Exception as exc:  # pydicom raises many types for a file that is not DICOM or is malformed
                problems.append(f"{file}: not a readable DICOM instance ({type(exc).__name__})")
                continue
            if ignored is not None:
                problems.append(f"{file}: not read: {ignored}")
            else:
                studies[study_uid].append(file)
    return dict(studies), problems


@contextmanager
def offline_context(path: Path | None, config: NodeConfig) -> Iterator[ContextGatherer | None]:
    """A context gatherer over the orders and lab results of an HL7 file, kept in a scratch store
    (None without a file)."""
    if path is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="qoq-context-") as scratch:
        store = Store(Path(scratch) / "state.db")
        try:
            for problem in load_messages(store, path, config.context.default_authority):
                print(f"qoq-node: {problem}", file=sys.stderr)
            yield ContextGatherer(store, Path(scratch), config.context.default_authority)
        finally:
            store.close()


def run_infer(config: NodeConfig, paths: Iterable[Path], context: Path | None, as_json: bool,
              out: Path | None) -> int:
    """``qoq-node infer``: every study in ``paths`` read and printed (and its results written under ``out``);
    the exit status: 1 when any study failed or none was found, else 0."""
    outcomes, found = infer_files(config, paths, context)
    if out is not None:
        outcomes = [write_offline_results(o, out, config) if isinstance(o, Read) else o for o in outcomes]
    if as_json:
        print(json.dumps([outcome_json(outcome) for outcome in outcomes], indent=2))
    else:
        for outcome in outcomes:
            print_outcome(outcome)
    return 0 if found and not any(isinstance(outcome, tuple) for outcome in outcomes) else 1


def infer_files(config: NodeConfig, paths: Iterable[Path], context: Path | None) -> tuple[list[Outcome], bool]:
    """Every study in ``paths`` through the chain, each failure its own; and whether any files were DICOM
    studies."""
    router = build_router(config)
    studies, problems = group_by_study(paths, config.dicom.ignored_sop_classes)
    for problem in problems:
        print(f"qoq-node: {problem}", file=sys.stderr)
    loaded = build_engine(config, test_model_when_unset=False)
    prepared: list[Prepared | Skipped | tuple[str, str]] = []
    with offline_context(context, config) as gatherer:
        for uid, files in studies.items():
            try:
                prepared.append(prepare_study(uid, files, router, config.imaging, loaded.profile, gatherer))
            except Exception as exc:  # this study is reported, the others go on
                prepared.append(_failed(uid, "cannot prepare the study", exc))
    settings = GenerationSettings(max_new_tokens=config.engine.max_new_tokens, temperature=config.engine.temperature)
    reads = iter(_read_each([p for p in prepared if isinstance(p, Prepared)], loaded.engine, settings))
    return [next(reads) if isinstance(p, Prepared) else p for p in prepared], bool(studies)


def _failed(study_uid: str, stage: str, exc: Exception) -> tuple[str, str]:
    """A study's failure as reported: a node error with its message, anything else by its type (logged with
    where it arose, its message left out: it may quote the study's values)."""
    if isinstance(exc, NodeError):
        return study_uid, reason(exc)
    log.error("study.failed", study=uid_hash(study_uid), stage=stage, exc_info=exc)
    return study_uid, f"{stage}: {reason(exc)}"


def _read_each(prepared: list[Prepared], engine: Engine, settings: GenerationSettings) -> list[Read | tuple[str, str]]:
    """The studies read in one engine batch; when the batch fails, each alone, so a failure is its study's."""
    try:
        return list(read_batch(prepared, engine, settings))
    except Exception as exc:
        if len(prepared) == 1:
            return [_failed(prepared[0].study_uid, "engine failed", exc)]
    outcomes: list[Read | tuple[str, str]] = []
    for study in prepared:
        try:
            outcomes.extend(read_batch([study], engine, settings))
        except Exception as exc:
            outcomes.append(_failed(study.study_uid, "engine failed", exc))
    return outcomes


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """One study's end for ``infer --json``: the same keys for a read, a skipped and a failed study."""
    empty: dict[str, Any] = {"domain": None, "skipped": None, "error": None, "model": None, "test_result": False,
                             "task": None, "caveats": [], "inputs": [], "context": None, "context_missing": [],
                             "labels": [], "boxes": [], "reasoning": "", "warnings": [], "raw_text": ""}
    if isinstance(outcome, tuple):
        return {"study_uid": outcome[0], "files": None, **empty, "error": outcome[1]}
    if isinstance(outcome, Skipped):
        return {"study_uid": outcome.study_uid, "files": len(outcome.files), **empty, "skipped": outcome.reason}
    prepared, findings = outcome.prepared, outcome.findings
    return {
        "study_uid": prepared.study_uid,
        "files": len(prepared.files),
        **empty,
        "domain": prepared.task.domain,
        "model": outcome.model,
        "test_result": outcome.is_test_result,
        "task": prepared.task.name,
        "caveats": list(prepared.caveats),
        "inputs": [m.describe() for m in prepared.inputs] + [s.describe() for s in prepared.signals],
        "context": prompt_context(prepared) or None,
        "context_missing": [missing.describe() for missing in prepared.context.missing],
        "labels": list(findings.labels),
        "boxes": [{"label": box.label, "model": asdict(box.model), "source": asdict(box.source)}
                  for box in findings.boxes],
        "reasoning": findings.reasoning,
        "warnings": list(findings.warnings),
        "raw_text": findings.raw_text,
    }


def print_outcome(outcome: Outcome) -> None:
    """One study's end for people."""
    if isinstance(outcome, tuple):
        print(f"study {outcome[0]}\n  failed: {outcome[1]}")
        return
    if isinstance(outcome, Skipped):
        print(f"study {outcome.study_uid} ({len(outcome.files)} files)\n  skipped: {outcome.reason}")
        return
    prepared, findings = outcome.prepared, outcome.findings
    print(f"study {prepared.study_uid} ({len(prepared.files)} files)")
    banner = "  ** TEST RESULT — not a clinical model output **" if outcome.is_test_result else ""
    print(f"  domain: {prepared.task.domain} (task {prepared.task.name}); model: {outcome.model}{banner}")
    print("  AI result — research use only, not for diagnosis")
    for caveat in prepared.caveats:
        print(f"  caveat: {caveat}")
    for model_input in prepared.inputs:
        described = model_input.describe()
        print(f"  input: image {'×'.join(map(str, described['source_pixels']))} → nearest "
              f"{'×'.join(map(str, described['pre_resize']['pixels']))} → grid "
              f"{'×'.join(map(str, described['processor_grid']['pixels']))}")
    for series in prepared.signals:
        print(f"  input: time-series {series.shape_text}")
    for line in prompt_context(prepared).split("\n")[1:]:
        print(f"  context: {line}")
    for missing in prepared.context.missing:
        print(f"  {missing.item} missing: {missing.text}")
    print(f"  answer: {', '.join(findings.labels) or '(none)'}")
    for box in findings.boxes:
        s = box.source
        print(f"  box '{box.label}': instance {s.frame.sop_instance_uid} frame {s.frame.frame}, "
              f"columns {s.column_min:.1f}-{s.column_max:.1f}, rows {s.row_min:.1f}-{s.row_max:.1f}")
    for warning in findings.warnings:
        print(f"  warning: {warning}")


def write_offline_results(outcome: Read, out: Path, config: NodeConfig) -> Read | tuple[str, str]:
    """A read study's result objects and ORU under ``out/<study UID>/``, each named on stderr; the study's
    failure when they cannot be written."""
    study_uid = outcome.prepared.study_uid
    try:
        written = write_results(outcome, out / study_uid, {"oru": Hl7Party()}, config.results.secondary_capture,
                                critical_labels=config.results.critical_labels, pdf_report=config.results.pdf_report)
    except Exception as exc:  # this study is reported, the others go on
        return _failed(study_uid, "results failed", exc)
    for path in written.files:
        print(f"wrote {path}", file=sys.stderr)
    for kind, error in written.omitted:
        print(f"qoq-node: no {kind} for study {study_uid}: {type(error).__name__}: {error}", file=sys.stderr)
    return outcome
