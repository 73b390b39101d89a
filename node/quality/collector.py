"""The quality metrics Prometheus reads at scrape time from the store (so that verdicts written by any process
— the listener, the API, ``qoq-node feedback`` — count, and a restart loses nothing). Labels are bounded: the
task, the verdict's source and kind; figures are per task over its last ``quality.window`` answers and verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.config.quality import QualityConfig
from node.ops.metrics import PREFIX, Metrics
from node.quality.report import TaskQuality, tasks, window_quality
from node.store import Store

#: name → (help, the figure of a task's quality it exports; None: no sample)
_FIGURES = {
    "concordance": ("Agree / (agree + partial + disagree) over the task's last quality.window verdicts (unknown "
                    "left out; partial counts against).", lambda q: q.concordance["value"]),
    "concordance_decided": ("Decided verdicts (agree, partial, disagree) among the task's last quality.window "
                            "verdicts: what the concordance stands on.", lambda q: q.concordance["decided"]),
    "baseline_concordance": ("The task's baseline concordance: its evaluation's accuracy, or the concordance of "
                             "its first quality.window verdicts.", lambda q: q.baseline.concordance),
    "label_psi": ("Population stability index of the task's answer labels over its last quality.window answers "
                  "against the baseline.", lambda q: q.psi),
    "input_drift": ("Share of the task's last quality.window answers whose images came from a manufacturer and "
                    "model not in the baseline's studies.", lambda q: q.input_drift),
    "rejection_rate": ("Share of the task's last quality.window answers rejected (IOCM rejection note, or the "
                       "feedback API's reject).", lambda q: q.rejection_rate),
}


class QualityCollector(Collector):
    """Verdicts by task, source and kind, and each task's quality figures, read when Prometheus scrapes."""

    def __init__(self, store: Store, config: QualityConfig, evaluation: dict[str, Any]) -> None:
        self._store = store
        self._config = config
        self._evaluation = evaluation

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The families, declared even before their first sample."""
        verdicts = GaugeMetricFamily(f"{PREFIX}_verdicts", "Verdicts kept, by task, source (report, iocm, api) and "
                                     "verdict.", labels=["task", "source", "verdict"])
        for (task, source, kind), count in sorted(self._store.verdicts.counts().items()):
            verdicts.add_metric([task, source, kind], count)
        yield verdicts
        qualities: list[TaskQuality] = [window_quality(self._store, task, self._config, self._evaluation)
                                        for task in tasks(self._store)]
        for name, (description, figure) in _FIGURES.items():
            family = GaugeMetricFamily(f"{PREFIX}_quality_{name}", description, labels=["task"])
            for quality in qualities:
                value = figure(quality)
                if value is not None:
                    family.add_metric([quality.task], float(value))
            yield family


def watch_quality(metrics: Metrics, store: Store, config: QualityConfig, evaluation: dict[str, Any]) -> None:
    """Export the quality metrics of ``store`` in ``metrics``' registry."""
    metrics.registry.register(QualityCollector(store, config, evaluation))
