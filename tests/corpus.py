"""The corpus tests' shared steps: real files read as studies of their own, through routing that reads every
image, answered by the replay engine with a box, and written as results."""

from __future__ import annotations

from pathlib import Path

import pydicom
import yaml

from node.chain import prepare_study
from node.config import load_config
from node.engine import GenerationSettings
from node.engine.replay import ReplayEngine
from node.imaging.geometry import SourceBox
from node.imaging.prepared import Prepared
from node.model.profiles import PROFILES
from node.reading import Read, read_batch
from node.results.hl7 import Hl7Party
from node.results.writer import ResultSet, write_results
from node.routing import DEFAULT_RULES, Router, RoutingRules, Skipped


def catch_all_router() -> Router:
    """The shipped routing rules, and a last rule that routes whatever they skip (a chest radiograph's task):
    every image of the corpus gets results."""
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    rules["rules"].append({"match": {}, "domain": "chest_xray"})
    return Router(RoutingRules.model_validate(rules))


def _boxed_read(prepared: Prepared) -> Read:
    """The study read by the replay engine, answering with a box over the middle of its first image."""
    [geometry] = [model_input.geometry for model_input in prepared.inputs[:1]] or [None]
    boxes = ""
    if geometry is not None:
        frame = geometry.placements[0].source
        x1, y1, x2, y2 = geometry.box_to_model(SourceBox(frame, frame.columns * 0.25, frame.rows * 0.25,
                                                         frame.columns * 0.6, frame.rows * 0.6))
        boxes = f'```json\n[{{"bbox_2d": [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}], "label": "mass"}}]\n```'
    engine = ReplayEngine({"*": f"<think>A dense focus.</think>{boxes}\\boxed{{Mass}}"})
    [read] = read_batch([prepared], engine, GenerationSettings())
    return read


def corpus_results(path: Path, out: Path, router: Router) -> ResultSet | None:
    """The results of one corpus file read as a study of its own (None when the node makes none: the file
    has no Study Instance UID, which the node refuses at ingest, or nothing to read — skipped — or its
    images cannot be read — the study fails with that reason)."""
    study_uid = pydicom.dcmread(path, stop_before_pixels=True).get("StudyInstanceUID")
    if not study_uid:
        return None
    try:
        prepared = prepare_study(str(study_uid), [path], router, load_config(None, environ={}).imaging,
                                 PROFILES["qwen2.5-vl"])
    except Exception:  # the study fails before the results stage (the imaging stage's to answer for)
        return None
    if isinstance(prepared, Skipped):
        return None
    return write_results(_boxed_read(prepared), out, {"ehr": Hl7Party()}, secondary_capture=True)
