"""``report.html``: the report for people, one self-contained file (pictures inlined as data URIs, no
script, no outside resource), every value escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from node.evaluation.figures import confusion_png

STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
.banner{background:#b00020;color:#fff;padding:.6em;font-weight:bold}.note{color:#555}"""


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _proportion(figure: dict[str, Any]) -> str:
    if figure["value"] is None:
        return "– (0 studies)"
    low, high = figure["ci95"]
    return (f"{_percent(figure['value'])} ({figure['successes']}/{figure['trials']}; "
            f"95 % CI {_percent(low)}–{_percent(high)})")


def _listing(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    items = "".join(f"<li>{escape(row['study'])}: {escape(str(row['reason']))}</li>" for row in rows)
    return f"<h3>{escape(title)} ({len(rows)})</h3><ul>{items}</ul>"


def _task(name: str, task: dict[str, Any]) -> str:
    matrix = task["confusion"]
    picture = confusion_png(matrix["reference"], matrix["answer"], matrix["counts"], f"{name}: confusion matrix")
    rows = "".join(
        f"<tr><td>{escape(label)}</td>" + "".join(f"<td>{_proportion(figures[key])}</td>"
                                                 for key in ("sensitivity", "specificity", "ppv", "npv")) + "</tr>"
        for label, figures in task["per_label"].items())
    boxes = task["boxes"]
    box_line = (f"<p>Boxes: hit rate {_proportion(boxes['hit_rate'])} (IoU ≥ {boxes['hit_iou']}), mean IoU "
                f"{boxes['mean_iou']:.3f} over {boxes['reference_boxes']} reference boxes</p>") if boxes else ""
    return (f"<section id='task-{escape(name)}'><h2>{escape(name)} (domain {escape(task['domain'])})</h2>"
            f"<p class='note'>{escape(task['population'])}</p>"
            f"<p>n = {task['n']} read, {len(task['skipped'])} skipped, {len(task['failed'])} failed</p>"
            f"<p>Accuracy (exact label set): {_proportion(task['accuracy'])}<br>"
            f"Set-F1 (training's score): {_percent(task['set_f1'])}<br>"
            f"The paper's accuracy for this domain: {escape(task['paper']['note'])} "
            f"<span class='note'>({escape(task['paper']['source'])})</span></p>"
            f"<img id='confusion-{escape(name)}' alt='{escape(name)} confusion matrix' src='{picture}'>"
            "<table><tr><th>label</th><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th></tr>"
            f"{rows}</table>{box_line}"
            f"{_listing('Skipped', task['skipped'])}{_listing('Failed', task['failed'])}</section>")


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML page."""
    test = " — TEST RESULT, not a model output" if report["test_result"] else ""
    tasks = "".join(_task(name, task) for name, task in report["tasks"].items())
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>qoq-node local validation</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<div class='banner'>{escape(report['research_use'])}{escape(test)}</div>"
            "<h1>Local validation</h1>"
            f"<p>Model: {escape(report['model'])}<br>Node: qoq-node {escape(report['node_version'])}<br>"
            f"Made: {escape(report['created'])}; {report['studies']} labelled studies; "
            f"{report['engine_calls']} asked of the engine this run (the others answered from the kept answers)</p>"
            f"{tasks}{_listing('Not routed to any task', report['not_routed'])}</body></html>")
