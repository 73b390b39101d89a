"""Where a study version's results are kept: ``storage.root/results/<study>/v<version>/``."""

from __future__ import annotations

from pathlib import Path

import pydicom

from node.results.writer import SR_FILE


class ResultsFolder:
    """The results folder of the node's studies, version by version."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def study_version(self, study_uid: str, version: int) -> Path:
        """Where the results of one study version are written."""
        return self.root / study_uid / f"v{version}"

    def previous_sr(self, study_uid: str, version: int) -> pydicom.Dataset | None:
        """The report of the latest version before ``version`` that has one: the one it supersedes."""
        for earlier in range(version - 1, 0, -1):
            path = self.study_version(study_uid, earlier) / SR_FILE
            if path.is_file():
                return pydicom.dcmread(path)
        return None
