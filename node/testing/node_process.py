"""A node running as its own process (``qoq-node serve``) on free loopback ports with its own storage,
and the settings that make a node play back recorded answers instead of running a model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from node.testing.loopback import LOOPBACK, free_port, stop_process, wait_http, wait_until


def replay_settings(path: Path, responses: Mapping[str, str]) -> dict[str, str]:
    """Write replay ``responses`` to ``path``; the environment that makes a node play them back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(responses)), encoding="utf-8")
    return {"QOQ_NODE__ENGINE__BACKEND": "replay", "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(path)}


class NodeProcess:
    """``qoq-node serve`` as a child process on free loopback ports. With ``replay`` (domain or "*" →
    response text) it runs the replay engine on those responses instead of a model. ``qoq_node``: the
    command that runs ``qoq-node`` (default this Python's ``-m node``; another install's console script)."""

    def __init__(self, root: Path, settings: Mapping[str, str] | None = None,
                 replay: Mapping[str, str] | None = None, qoq_node: Sequence[str] = (sys.executable, "-m", "node"),
                 ) -> None:
        self.root = root
        self.qoq_node = tuple(qoq_node)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.settings = {
            "QOQ_NODE__DICOM__HOST": LOOPBACK,
            "QOQ_NODE__DICOM__PORT": str(self.dicom_port),
            "QOQ_NODE__HTTP__HOST": LOOPBACK,
            "QOQ_NODE__HTTP__PORT": str(self.http_port),
            "QOQ_NODE__STORAGE__ROOT": str(root / "var"),
            "QOQ_NODE__STORAGE__MIN_FREE_BYTES": "0",
            **(replay_settings(root / "replay.json", replay) if replay is not None else {}),
            **(settings or {}),
        }
        self.log_path = root / "node.log"
        self.process: subprocess.Popen | None = None
        if self.settings.get("QOQ_NODE__LOG__LEVEL", "INFO").upper() not in ("DEBUG", "INFO"):
            raise ValueError("NodeProcess waits for the info event node.started: keep log.level at INFO or DEBUG")

    @property
    def url(self) -> str:
        """Base URL of the operations endpoint."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment the node runs with (also right for ``qoq-node studies``)."""
        return {**os.environ, **self.settings}

    def start(self) -> NodeProcess:
        """Start the node and wait until it is ready: /healthz answers, and every listener its configuration
        enables (the SCP, the HL7 listener) listens — the node logs ``node.started`` once they all do."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            started_at = log.tell()
            self.process = subprocess.Popen(
                [*self.qoq_node, "serve"], stdout=log, stderr=log, env=self.env
            )
        wait_http(f"{self.url}/healthz", self.process, 60, self.log_path)
        # /healthz answers before the SCP and the HL7 listener listen: wait for the event that follows them
        wait_until(lambda: self._logged_since(started_at, b"node.started"), "the node did not log node.started",
                   self.process, 60, self.log_path)
        return self

    def _logged_since(self, offset: int, text: bytes) -> bool:
        """Whether the log holds ``text`` after ``offset`` (this start's lines only)."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return text in log.read()

    def stop(self) -> None:
        """SIGTERM the node and wait for it to drain."""
        if self.process is not None:
            stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> str:
        """The node's /metrics text."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:  # noqa: S310
            return response.read().decode()

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
