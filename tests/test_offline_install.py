"""Air-gapped GPU hosts: the wheelhouse, the offline install next to the host's own torch, and the
one-run GPU benchmark's dry run.

The stand-in for the host: a fresh virtual environment that has torch and torchvision but not the
node — this machine's torch build (the one CI installs), made visible to it through a site directory
as a host's system site-packages would be. The node then comes only from the wheelhouse (``pip
--no-index``), and must run there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from node.testing.node_process import replay_settings
from node.testing.synthetic import write_cr_study
from tests.helpers import LONGEST_WAIT_SECONDS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "offline"))
from build_wheelhouse import HOST_PROVIDES, build, is_host_provided  # noqa: E402


def _closure(names: set[str]) -> set[str]:
    """The installed distributions ``names`` need (with the extras they ask of each other), themselves included."""
    seen: set[tuple[str, str]] = set()
    pending = [(name, "") for name in names]
    found: set[str] = set()
    while pending:
        name, extra = pending.pop()
        if (name.lower(), extra) in seen:
            continue
        seen.add((name.lower(), extra))
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform
        found.add(name.lower())
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                pending += [(requirement.name, wanted) for wanted in ("", *requirement.extras)]
    return found


def _host_site(directory: Path) -> Path:
    """A site directory holding this environment's torch and torchvision and what they need (links)."""
    directory.mkdir()
    site = Path(importlib.metadata.distribution("torch").locate_file(""))
    tops = {Path(str(f)).parts[0] for name in _closure({"torch", "torchvision"})
            for f in importlib.metadata.distribution(name).files or [] if not str(f).startswith("..")}
    for top in tops:
        if (site / top).exists() and not (directory / top).exists():
            (directory / top).symlink_to(site / top)
    return directory


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheelhouse for this machine's Python and platform."""
    out = tmp_path_factory.mktemp("offline") / "wheelhouse"
    build(out, None, (), HOST_PROVIDES, 60.0)
    return out


def test_the_wheelhouse_holds_the_node_and_its_needs_but_not_the_hosts(wheelhouse: Path) -> None:
    manifest = json.loads((wheelhouse / "manifest.json").read_text())
    names = {wheel.split("-")[0].lower() for wheel in manifest["wheels"]}
    assert {"qoq_node", "pydicom", "pynetdicom", "highdicom", "hl7apy", "transformers", "pylibjpeg"} <= names
    assert not [name for name in names if is_host_provided(name, ("torch", "torchvision", "nvidia-*", "numpy"))]
    assert manifest["total_bytes"] < 60 * 2**20  # carried to the host at most 64 MiB at a time
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in wheelhouse.glob("*.whl"))
    check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=wheelhouse)
    assert check.returncode == 0


def test_the_node_installs_offline_next_to_the_hosts_torch_and_runs(wheelhouse: Path, tmp_path: Path) -> None:
    host = tmp_path / "host-venv"
    venv.create(host, with_pip=True)
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    # as on a host: a Python 3.11 venv holds ensurepip's old setuptools, which hides the host's newer one that
    # torch requires; the wheelhouse carries a setuptools for that
    [site_packages] = host.glob("lib/python*/site-packages")
    (site_packages / "host-torch.pth").write_text(str(_host_site(tmp_path / "host-site")) + "\n")
    installed = subprocess.run(["bash", str(wheelhouse / "install.sh"), str(wheelhouse), str(host)],
                               capture_output=True, text=True, env=environment, timeout=LONGEST_WAIT_SECONDS)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "qoq-node" in installed.stdout and f"torch {importlib.metadata.version('torch')}" in installed.stdout
    freeze = subprocess.run([str(host / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, env=environment, check=True)
    versions = {entry["name"].lower(): entry["version"] for entry in json.loads(freeze.stdout)}
    assert versions["torch"] == importlib.metadata.version("torch")  # the host's, untouched
    qoq_node = host / "bin" / "qoq-node"
    run = {**environment, "QOQ_NODE__STORAGE__ROOT": str(tmp_path / "var")}  # the routing rules: the wheel's
    checked = subprocess.run([str(qoq_node), "check"], capture_output=True, text=True, env=run, cwd=tmp_path)
    assert checked.returncode == 0 and "configuration OK" in checked.stdout, checked.stderr
    cr = write_cr_study(tmp_path / "cr")
    replay = replay_settings(tmp_path / "replay.json", {"*": "<think>clear</think>\\boxed{No Finding}"})
    inferred = subprocess.run([str(qoq_node), "infer", "--json", str(tmp_path / "cr")], capture_output=True, text=True,
                              env={**run, **replay}, cwd=tmp_path)
    assert inferred.returncode == 0, inferred.stderr
    [outcome] = json.loads(inferred.stdout)
    assert outcome["study_uid"] == cr.study_uid and outcome["labels"] == ["No Finding"]
    assert outcome["inputs"][0]["pre_resize"]["method"] == "nearest"


@pytest.mark.slow
def test_the_gpu_benchmark_runs_end_to_end_as_a_dry_run(tmp_path: Path) -> None:
    """``python -m benchmarks.gpu --dry-run``: the plan printed first, every step on the tiny shape on the CPU
    in its own process (the compiled row last), the tiny model through ``qoq-node infer``, the report written."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--out", str(tmp_path / "out"),
                          "--workdir", str(tmp_path / "work")],
                         capture_output=True, text=True, cwd=REPO, timeout=LONGEST_WAIT_SECONDS)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("GPU benchmark plan: 6 steps") and "1. GPU, versions" in run.stdout
    report = json.loads((tmp_path / "out" / "gpu-benchmark.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["prepare", "infer", "eager", "sdpa", "tower", "sdpa + static cache + compile"]
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(steps, "ok")
    assert [row["concurrency"] for row in steps["sdpa"]["figures"]["rows"]] == [1, 4]
    assert steps["eager"]["figures"]["profile"]["top"] and steps["infer"]["figures"]["task"] == "chest_xray"
    assert steps["tower"]["figures"]["side"] == 224 and steps["tower"]["figures"]["max_abs_difference"] < 1e-3
    table = (tmp_path / "out" / "gpu-benchmark.md").read_text()
    assert "| sdpa | 4 |" in table and "Vision tower at 224²" in table and "qoq-node infer --json" in table
