"""Air-gapped GPU hosts: the wheelhouse, the offline install next to the host's own packages, and the
one-run GPU benchmark's dry run.

The stand-in for the reference host (deploy/offline/hosts/reference-gpu.txt): a "host" Python that is
itself a virtual environment without pip, made from this test's Python, which sees torch, torchvision,
numpy, pillow, onnx and onnxruntime — this machine's, through a site directory of links, as a host's own
site-packages — and holds the reference host's transformers and tokenizers (5.17.0, 0.23.2: older than
CI's, so the node and the benchmark run on the host's versions) and an old typing-extensions (4.15.0,
older than the node's pydantic takes). The wheelhouse is built with ``--host`` from a host file of those
versions, so what only the host's packages need is left out, and ``--with onnxscript`` for the GPU
benchmark; the node then comes only from the wheelhouse (``pip --no-index``) and must run there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from node.testing.node_process import replay_settings
from node.testing.synthetic import write_cr_study
from tests.helpers import LONGEST_WAIT_SECONDS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "offline"))
from build_wheelhouse import HOST_PROVIDES, build, is_host_provided  # noqa: E402

#: What the stand-in host has as this machine has it (linked; its versions go into the rehearsal's host file).
HOST_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "onnx", "onnxruntime")
#: What the stand-in host has at the reference host's versions (installed into it from PyPI, with what they
#: need): the node must run on the transformers the reference host has, not only on CI's newer one.
REFERENCE_PACKAGES = ("transformers", "tokenizers")
#: The host's own typing-extensions: older than pydantic 2.14 takes (>= 4.16.0), so the wheelhouse's must win.
OLD_TYPING_EXTENSIONS = "4.15.0"


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
    """A site directory holding this environment's :data:`HOST_PACKAGES` and what they need (links), but
    not typing-extensions (the host has its own, older)."""
    directory.mkdir()
    site = Path(importlib.metadata.distribution("torch").locate_file(""))
    tops = {Path(str(f)).parts[0] for name in _closure(set(HOST_PACKAGES)) - {"typing-extensions", "typing_extensions"}
            for f in importlib.metadata.distribution(name).files or [] if not str(f).startswith("..")}
    for top in tops:
        if (site / top).exists() and not (directory / top).exists():
            (directory / top).symlink_to(site / top)
    return directory


def _clean_environment() -> dict[str, str]:
    """This process's environment without what would point pip or Python at this checkout's environment."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in host's Python: a virtual environment without pip, made from this test's Python."""
    root = tmp_path_factory.mktemp("host")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    [site_packages] = (root / "venv").glob("lib/python*/site-packages")
    (site_packages / "host-packages.pth").write_text(str(_host_site(root / "site")) + "\n")
    python = root / "venv" / "bin" / "python"
    reference = _reference_pins()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--only-binary=:all:", "--quiet",
                    "--disable-pip-version-check", *(f"{name}=={reference[name]}" for name in REFERENCE_PACKAGES)],
                   check=True, env=_clean_environment())
    # last: what the reference packages pulled in would have replaced it
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                    "--dest", str(root), f"typing-extensions=={OLD_TYPING_EXTENSIONS}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--force-reinstall",
                    "--no-deps", "--no-index", "--quiet", *map(str, root.glob("typing_extensions-*.whl"))],
                   check=True, env=_clean_environment())
    return python


def _reference_pins() -> dict[str, str]:
    """The reference host's versions, from its host file."""
    lines = (REPO / "deploy" / "offline" / "hosts" / "reference-gpu.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def _host_version(host: Path, name: str) -> str:
    """The version of ``name`` the stand-in host's Python sees."""
    return subprocess.run([str(host), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                          capture_output=True, text=True, check=True, env=_clean_environment()).stdout.strip()


@pytest.fixture(scope="module")
def host_file(tmp_path_factory: pytest.TempPathFactory, host: Path) -> Path:
    """The rehearsal's host file: the stand-in host's versions of :data:`HOST_PACKAGES` and
    :data:`REFERENCE_PACKAGES`."""
    path = tmp_path_factory.mktemp("hosts") / "rehearsal.txt"
    path.write_text("# the stand-in host\n" + "".join(f"{name}=={_host_version(host, name)}\n"
                                                      for name in (*HOST_PACKAGES, *REFERENCE_PACKAGES)))
    return path


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, host_file: Path) -> Path:
    """The wheelhouse for this machine's Python and platform and the stand-in host."""
    out = tmp_path_factory.mktemp("offline") / "wheelhouse"
    build(out, None, (), HOST_PROVIDES, 60.0, host_file, ("onnxscript",))
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, host: Path) -> tuple[Path, str]:
    """The node installed from the wheelhouse next to the stand-in host's packages: the environment and
    what install.sh printed."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    done = subprocess.run(["bash", str(wheelhouse / "install.sh"), str(wheelhouse), str(venv)],
                          capture_output=True, text=True, env={**_clean_environment(), "PYTHON": str(host)},
                          timeout=LONGEST_WAIT_SECONDS)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv, done.stdout


def _names(manifest: dict, key: str) -> set[str]:
    return {wheel.split("-")[0].lower() for wheel in manifest[key]}


def test_the_wheelhouse_holds_the_node_and_its_needs_but_not_the_hosts(wheelhouse: Path) -> None:
    manifest = json.loads((wheelhouse / "manifest.json").read_text())
    names = _names(manifest, "wheels")
    assert {"qoq_node", "pydicom", "pynetdicom", "highdicom", "hl7apy", "pylibjpeg", "pip", "typing_extensions",
            "onnxscript"} <= names
    assert not [name for name in names if is_host_provided(name, ("torch", "torchvision", "nvidia-*", "numpy"))]
    # the host has transformers, tokenizers and the hub: neither they nor what only they need are carried
    assert not names & {"transformers", "tokenizers", "huggingface_hub", "hf_xet", "safetensors", "regex"}
    reasons = {wheel.split("-")[0].lower(): why for wheel, why in manifest["left_out"].items()}
    assert reasons["transformers"] == f"the host has it ({_reference_pins()['transformers']})"
    assert reasons["onnx"] == f"the host has it ({importlib.metadata.version('onnx')})"
    assert reasons["safetensors"].startswith("needed only by what the host has (") and "transformers" in reasons[
        "safetensors"]
    assert manifest["total_bytes"] < 60 * 2**20  # carried to the host at most 64 MiB at a time
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in wheelhouse.glob("*.whl"))
    check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=wheelhouse)
    assert check.returncode == 0
    assert (wheelhouse / "requirements.txt").read_text() == "qoq-node[transformers]\nonnxscript\n"


def _build_leftovers() -> dict[str, int]:
    """What a setuptools build in the checkout leaves there (build/, *.egg-info), with their times: an
    editable install (CI's) has its egg-info already."""
    return {path.name: path.stat().st_mtime_ns for path in [*REPO.glob("build"), *REPO.glob("*.egg-info")]}


def test_without_a_host_file_the_wheelhouse_carries_transformers_but_not_torchs_needs(tmp_path: Path) -> None:
    before = _build_leftovers()
    manifest = build(tmp_path / "wheelhouse", None, (), HOST_PROVIDES, 60.0)
    assert _build_leftovers() == before  # the node's wheel is built from a copy: the checkout is left alone
    names = _names(manifest, "wheels")
    assert {"qoq_node", "transformers", "tokenizers", "huggingface_hub", "typing_extensions", "pip"} <= names
    assert not names & {"numpy", "pillow", "torch", "filelock"}
    assert set(manifest["left_out"].values()) == {"the host has it (with its torch)"}


def test_a_host_whose_versions_miss_the_nodes_ranges_stops_the_build(tmp_path: Path) -> None:
    host_file = tmp_path / "old.txt"
    host_file.write_text("torch==2.11.0+cu130\ntransformers==4.57.1\n")
    with pytest.raises(SystemExit, match=r"the host has transformers 4\.57\.1, the node needs transformers<6,>=5\.0"):
        build(tmp_path / "wheelhouse", "3.12", (), HOST_PROVIDES, 60.0, host_file)
    assert not (tmp_path / "wheelhouse").exists()


def _where(python: Path, environment: dict[str, str]) -> dict[str, list[str]]:
    """Where ``python`` imports the host's packages and typing-extensions from, and their versions."""
    script = ("import importlib.metadata as m, json, torch, transformers, numpy, PIL, typing_extensions\n"
              "print(json.dumps({module.__name__: [module.__file__, m.version(name)] for module, name in ["
              "(torch, 'torch'), (transformers, 'transformers'), (numpy, 'numpy'), (PIL, 'pillow'),"
              " (typing_extensions, 'typing-extensions')]}))")
    return json.loads(subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True,
                                     env=environment).stdout)


def test_the_node_installs_offline_next_to_the_hosts_packages_and_runs(installed: tuple[Path, str], host: Path,
                                                                        tmp_path: Path) -> None:
    environment = _clean_environment()
    venv, printed = installed
    assert "qoq-node" in printed and f"torch {importlib.metadata.version('torch')}" in printed
    where = _where(venv / "bin" / "python", environment)
    expected = {"torch": importlib.metadata.version("torch"), "numpy": importlib.metadata.version("numpy"),
                "PIL": importlib.metadata.version("pillow"), "transformers": _reference_pins()["transformers"]}
    for module, wanted in expected.items():  # the host's, kept as they are
        path, version = where[module]
        assert not Path(path).is_relative_to(venv), (module, path)
        assert version == wanted, module
    path, version = where["typing_extensions"]  # the wheelhouse's, in front of the host's older one
    assert Path(path).is_relative_to(venv) and Version(version) >= Version("4.16")
    assert _where(host, environment)["typing_extensions"][1] == OLD_TYPING_EXTENSIONS  # the host's, untouched
    qoq_node = venv / "bin" / "qoq-node"
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
def test_the_gpu_benchmark_runs_as_a_dry_run_through_the_offline_install(
        wheelhouse: Path, host: Path, installed: tuple[Path, str], tmp_path: Path) -> None:
    """``benchmarks/gpu.sh WHEELHOUSE OUT --dry-run`` with the host's Python, started from another directory
    with relative paths: the plan printed first, every step on the tiny shape on the CPU in its own process
    (the compiled row last), the tiny model through ``qoq-node infer``, the vision tower exported with the
    carried onnxscript, the report in OUT there."""
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), os.path.relpath(wheelhouse, tmp_path), "out",
                          "--dry-run", "--workdir", str(tmp_path / "work")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=2 * LONGEST_WAIT_SECONDS,
                         env={**_clean_environment(), "PYTHON": str(host), "QOQ_NODE_VENV": str(installed[0])})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "GPU benchmark plan: 6 steps" in run.stdout and "1. GPU, versions" in run.stdout
    report = json.loads((tmp_path / "out" / "gpu-benchmark.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["prepare", "infer", "eager", "sdpa", "tower", "sdpa + static cache + compile"]
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(steps, "ok"), steps
    assert steps["prepare"]["figures"]["torch"].split("+")[0] == importlib.metadata.version("torch")
    assert [row["concurrency"] for row in steps["sdpa"]["figures"]["rows"]] == [1, 4]
    assert steps["eager"]["figures"]["profile"]["top"] and steps["infer"]["figures"]["task"] == "chest_xray"
    assert steps["tower"]["figures"]["side"] == 224 and steps["tower"]["figures"]["max_abs_difference"] < 1e-3
    table = (tmp_path / "out" / "gpu-benchmark.md").read_text()
    assert "| sdpa | 4 |" in table and "Vision tower at 224²" in table and "qoq-node infer --json" in table
