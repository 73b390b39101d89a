"""The report's pictures, drawn with matplotlib (its object API: no global state, no display) and
returned as PNG data URIs, so that ``report.html`` holds them itself."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from matplotlib.figure import Figure


def confusion_png(reference: Sequence[str], answer: Sequence[str], counts: Sequence[Sequence[int]],
                  title: str) -> str:
    """A confusion matrix (rows: reference labels, columns: answered labels) as a PNG data URI."""
    width = 2.5 + 0.75 * len(answer)
    figure = Figure(figsize=(width, 1.8 + 0.5 * len(reference)), dpi=100, layout="constrained")
    axes = figure.subplots()
    peak = max([1, *(max(row) for row in counts)])
    axes.imshow(counts, cmap="Blues", aspect="auto", vmin=0, vmax=peak)
    for row, values in enumerate(counts):
        for column, value in enumerate(values):
            axes.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > peak / 2 else "black")
    axes.set_xticks(range(len(answer)), list(answer), rotation=45, ha="right")
    axes.set_yticks(range(len(reference)), list(reference))
    axes.set_xlabel("model answer")
    axes.set_ylabel("reference")
    axes.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
