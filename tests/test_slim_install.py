"""The slim node: ``pip install qoq-node`` (the base, no extra) holds neither torch nor transformers, and
runs the openai backend against the project's own ``qoq-node engine serve`` running elsewhere (here: in
the environment the tests run in, on the tiny test model) — ``qoq-node check`` passes, and a study goes the
whole loop: from the PACS (Orthanc) over DICOM, read by the remote engine, its results back in the PACS.

The base install is a real one (its dependencies resolved and installed by pip, as the README's command
does, into a fresh virtual environment, about 20 s here); the slim node runs from that environment's
console script with no ``PYTHONPATH``, so nothing of this environment can leak in. A unit-lane test guards
the same in this environment: the slim path's modules import none of torch, transformers and the like.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from node.engine.extras import TRANSFORMERS_INSTALL, TRANSFORMERS_MODULES
from node.engine.tiny import TINY_MODEL_NAME
from node.testing.loopback import LOOPBACK, stop_process
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_cr_study
from tests.helpers import LONGEST_WAIT_SECONDS, REPO, stored_studies, wait_for

#: This environment, less what would make the slim one see it.
CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the base install of this checkout (its bin directory)."""
    environment = tmp_path_factory.mktemp("slim") / "venv"
    venv.create(environment, with_pip=False)  # pip installs into it from here (--python)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(environment / "bin" / "python"), "install", "--quiet",
         "--disable-pip-version-check", str(REPO), "-c", str(REPO / "constraints.txt")],
        capture_output=True, text=True, env=CLEAN_ENV, timeout=LONGEST_WAIT_SECONDS)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return environment / "bin"


class EngineServe:
    """``qoq-node engine serve`` started; :attr:`url` waits until it serves (it loads while the venv installs)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @functools.cached_property
    def url(self) -> str:
        """The server's API root, once it says it serves."""
        line = ""
        while "serving" not in line:
            line = self.process.stdout.readline()
            assert line or self.process.poll() is None, "engine serve exited"
        port = re.search(r":(\d+)/v1", line).group(1)
        return f"http://{LOOPBACK}:{port}/v1"


@pytest.fixture(scope="module")
def engine_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServe]:
    """``qoq-node engine serve`` in this environment (torch, transformers) on the tiny model."""
    work = tmp_path_factory.mktemp("engine")
    (work / "engine.yaml").write_text(f"engine: {{backend: transformers, model: {tiny_dir}, device: cpu}}\n"
                                      f"storage: {{root: {work / 'var'}}}\nlog: {{format: console}}\n")
    process = subprocess.Popen([sys.executable, "-m", "node", "engine", "serve", "--config", str(work / "engine.yaml"),
                                "--port", "0", "--served-model", "qoq-med"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield EngineServe(process)
    finally:
        stop_process(process)


def _slim_run(slim: Path, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(slim / "qoq-node"), *arguments], capture_output=True, text=True, env=CLEAN_ENV,
                          cwd=cwd, timeout=120)


def test_the_slim_path_imports_neither_torch_nor_transformers() -> None:
    """The unit-lane guard of the same: the modules serve, check, infer and routing load, with the openai and
    replay backends, import none of the [transformers] extra's modules (here, where they are installed)."""
    modules = ("node.cli", "node.app", "node.offline", "node.routing_explain", "node.engine.factory",
               "node.engine.openai_backend", "node.engine.replay", "node.engine.checkpoint")
    probe = (f"import sys, {', '.join(modules)}; "
             f"print(*sorted(m for m in sys.modules if m.split('.')[0] in {TRANSFORMERS_MODULES!r}))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == ""


@pytest.mark.slow
@pytest.mark.usefixtures("engine_server")  # started first: it loads while the venv installs
def test_the_base_install_has_no_torch_and_names_the_extra_for_the_transformers_backend(slim: Path,
                                                                                       tmp_path: Path) -> None:
    probe = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m)])"
    found = subprocess.run([str(slim / "python"), "-c", probe, *TRANSFORMERS_MODULES], capture_output=True,
                           text=True, env=CLEAN_ENV, check=True)
    assert found.stdout.strip() == ""  # none of torch, torchvision, transformers, tokenizers
    (tmp_path / "node.yaml").write_text(f"storage: {{root: {tmp_path / 'var'}}}\n")  # the default: transformers
    refused = _slim_run(slim, "check", "--config", str(tmp_path / "node.yaml"), cwd=tmp_path)
    assert refused.returncode == 1 and TRANSFORMERS_INSTALL in refused.stderr, refused.stderr
    tiny = _slim_run(slim, "model", "tiny", str(tmp_path / "tiny"), cwd=tmp_path)
    assert tiny.returncode == 1 and TRANSFORMERS_INSTALL in tiny.stderr and "Traceback" not in tiny.stderr


@pytest.mark.slow
def test_the_slim_node_checks_and_reads_a_study_through_a_remote_engine(slim: Path, engine_server: EngineServe,
                                                                        orthanc: Orthanc, tmp_path: Path) -> None:
    url = engine_server.url
    engine = {"QOQ_NODE__ENGINE__BACKEND": "openai", "QOQ_NODE__ENGINE__OPENAI__URL": url,
              "QOQ_NODE__ENGINE__OPENAI__SERVED_MODEL": "qoq-med", "QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "24"}
    checked = subprocess.run([str(slim / "qoq-node"), "check"], capture_output=True, text=True, cwd=tmp_path,
                             env={**CLEAN_ENV, **engine, "QOQ_NODE__STORAGE__ROOT": str(tmp_path / "var")}, timeout=60)
    assert checked.returncode == 0 and f"engine server OK: {url} serves 'qoq-med'" in checked.stdout, \
        checked.stdout + checked.stderr
    destinations = f"{{dicom: [{{name: pacs, ae_title: {orthanc.aet}, host: {LOOPBACK}, port: {orthanc.dicom_port}}}]}}"
    node = NodeProcess(tmp_path / "node", {**engine, "QOQ_NODE__STUDY__STABLE_SECONDS": "1", "PYTHONPATH": "",
                                           "QOQ_NODE__DESTINATIONS": destinations},
                       qoq_node=[str(slim / "qoq-node")])
    study = write_cr_study(tmp_path / "cr")
    try:
        node.start()
        orthanc.add_modality("slimnode", "QOQNODE", node.dicom_port)
        orthanc.upload(study.files[0])
        orthanc.send_study(orthanc.study_id(study.study_uid), "slimnode")
        wait_for(lambda: [s.state for s in stored_studies(node)] == ["complete"], timeout=LONGEST_WAIT_SECONDS)
    finally:
        node.stop()
    results = tmp_path / "node" / "var" / "results" / study.study_uid / "v1"
    written = {pydicom.dcmread(path).SOPInstanceUID for path in results.glob("*.dcm")}
    in_pacs = {i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances(study.study_uid)}
    assert len(written) >= 3 and written <= in_pacs  # SR, GSPS, KOS (SEG only with boxes) delivered to the PACS
    sr = pydicom.dcmread(results / "sr.dcm")
    assert "TEST MODEL" in sr.SeriesDescription  # the remote engine said it runs the test model
    assert TINY_MODEL_NAME.encode() in (results / "sr.dcm").read_bytes()  # read by the engine server's model
