"""``qoq-node evaluate``'s report.html opened in Debian's Chromium: it loads nothing from outside, shows the
research-use banner and each task's confusion matrix, drawn (not blank). Screenshots go to
``.cache/test-artifacts/evaluation`` (``QOQ_TEST_ARTIFACTS``)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from tests.evaluation_set import run_evaluate, write_evaluation_set
from tests.viewer.ohif import CHROMIUM, CHROMIUM_ARGS, REPO

ARTIFACTS = Path(os.environ.get("QOQ_TEST_ARTIFACTS", REPO / ".cache" / "test-artifacts")) / "evaluation"


def test_report_html_shows_each_confusion_matrix(tmp_path: Path) -> None:
    dataset = write_evaluation_set(tmp_path)
    run_evaluate(dataset, tmp_path / "report")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: None if request.url.startswith(("file:", "data:"))
                    else outside.append(request.url))
            page.goto((tmp_path / "report" / "report.html").as_uri())
            page.screenshot(path=ARTIFACTS / "report.png", full_page=True)
            assert page.locator(".banner").inner_text().startswith("AI RESULT - RESEARCH USE ONLY")
            for task in ("chest_xray", "ct_chest"):
                picture = page.locator(f"#confusion-{task}")
                picture.scroll_into_view_if_needed()
                assert picture.is_visible()
                assert picture.evaluate("image => image.complete && image.naturalWidth > 200")
                shot = np.asarray(Image.open(io.BytesIO(picture.screenshot(path=ARTIFACTS / f"{task}.png")))
                                  .convert("L"))
                assert shot.std() > 20, f"{task}'s confusion matrix looks blank"
                assert (shot < 100).mean() > 0.005  # dark cells and lettering: the matrix is drawn
            assert "Accuracy (exact label set): 25.0 % (1/4" in page.locator("#task-chest_xray").inner_text()
        finally:
            browser.close()
    assert outside == []  # self-contained: nothing fetched from anywhere
