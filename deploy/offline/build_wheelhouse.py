"""Build a wheelhouse for installing qoq-node on an air-gapped GPU host (run on a connected machine).

    python deploy/offline/build_wheelhouse.py --out wheelhouse                       # this machine's Python
    python deploy/offline/build_wheelhouse.py --out wheelhouse --python-version 3.12  # a Python 3.12 host

Writes into ``--out``: the node's own wheel, every wheel it needs for the target Python and platform
(binary wheels only: nothing is built on the host) *except* what a GPU host with PyTorch already has
(``--host-provides``: torch, torchvision, triton, nvidia-* and their own requirements such as numpy
and pillow), ``SHA256SUMS``, ``manifest.json`` (target, packages, sizes) and a copy of
``install.sh``. It refuses to finish above ``--max-mib`` (60 MiB: files are carried to such hosts at
most 64 MiB at a time). Then, on the host: ``bash install.sh WHEELHOUSE VENV``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: What a GPU host with a CUDA PyTorch brings: torch, torchvision, their GPU runtime and their requirements.
HOST_PROVIDES = ("torch", "torchvision", "triton", "nvidia-*", "numpy", "pillow", "sympy", "mpmath", "networkx",
                 "jinja2", "markupsafe", "filelock", "fsspec", "typing-extensions")
#: The extras a GPU host installs: the in-process reference engine (transformers, next to the host's torch);
#: install.sh installs qoq-node with the same. Not [evaluate]: matplotlib and its needs would take the
#: wheelhouse past --max-mib (64 MiB measured with it).
EXTRAS = ("transformers",)
#: Carried although no requirement of the node's names them: a Python 3.11 virtual environment starts with
#: ensurepip's setuptools (65), which hides the host's newer one that torch requires (>=77.0.3 for torch 2.14).
CARRIED_FOR_THE_HOST = ("setuptools",)
#: manylinux tags of an x86_64 Linux host (glibc 2.17 and later).
LINUX_X86_64 = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def normalise(name: str) -> str:
    """A project name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_host_provided(name: str, host_provides: tuple[str, ...]) -> bool:
    """Whether ``name`` is one the host brings (a trailing ``*`` matches a prefix)."""
    name = normalise(name)
    return any(name.startswith(normalise(p[:-1])) if p.endswith("*") else name == normalise(p) for p in host_provides)


def node_requirements(host_provides: tuple[str, ...]) -> list[str]:
    """The node's declared dependencies and those of its :data:`EXTRAS`, less those the host brings."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]
    return [requirement for requirement in declared
            if not is_host_provided(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0], host_provides)]


def wheel_project(path: Path) -> str:
    """The project a wheel file belongs to (its name up to the first dash)."""
    return normalise(path.name.split("-")[0])


def download(requirements: list[str], out: Path, python_version: str | None, platforms: tuple[str, ...]) -> None:
    """``pip download`` binary wheels of ``requirements`` (and theirs) for the target into ``out``."""
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(out),
               "--disable-pip-version-check", "--quiet"]
    if python_version:
        command += ["--python-version", python_version, "--implementation", "cp",
                    "--abi", f"cp{python_version.replace('.', '')}"]
        for platform in platforms:
            command += ["--platform", platform]
    subprocess.run([*command, *requirements], check=True)


def build(out: Path, python_version: str | None, platforms: tuple[str, ...], host_provides: tuple[str, ...],
          max_mib: float) -> dict:
    """Fill ``out`` and return its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(REPO)],
                   check=True)
    download([*node_requirements(host_provides), *CARRIED_FOR_THE_HOST], out, python_version, platforms)
    dropped = [path.name for path in out.glob("*.whl") if is_host_provided(wheel_project(path), host_provides)]
    for name in dropped:
        (out / name).unlink()  # pulled in by another requirement (highdicom needs numpy): the host has it
    shutil.copyfile(Path(__file__).with_name("install.sh"), out / "install.sh")
    wheels = sorted(out.glob("*.whl"))
    (out / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(w.read_bytes()).hexdigest()}  {w.name}\n"
                                            for w in wheels))
    total = sum(w.stat().st_size for w in wheels)
    manifest = {
        "python_version": python_version or f"{sys.version_info.major}.{sys.version_info.minor}",
        "platforms": list(platforms) if python_version else ["this machine's"],
        "host_provides": list(host_provides), "left_out": sorted(dropped),
        "wheels": {w.name: w.stat().st_size for w in wheels}, "total_bytes": total,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if total > max_mib * 2**20:
        raise SystemExit(f"the wheelhouse holds {total / 2**20:.1f} MiB, above --max-mib {max_mib}; "
                         "leave out what the host has with --host-provides")
    return manifest


def main() -> None:
    """Build the wheelhouse and say what it holds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python-version", default=None, help="the host's Python, e.g. 3.12 (default: this one's)")
    parser.add_argument("--platform", action="append", default=None,
                        help=f"a wheel platform tag the host takes (repeatable; default {' '.join(LINUX_X86_64)})")
    parser.add_argument("--host-provides", nargs="+", default=list(HOST_PROVIDES),
                        help="projects the host already has (a trailing * matches a prefix)")
    parser.add_argument("--max-mib", type=float, default=60.0)
    args = parser.parse_args()
    manifest = build(args.out, args.python_version, tuple(args.platform or LINUX_X86_64), tuple(args.host_provides),
                     args.max_mib)
    print(f"{len(manifest['wheels'])} wheels, {manifest['total_bytes'] / 2**20:.1f} MiB, for Python "
          f"{manifest['python_version']} in {args.out} (left out, the host has them: "
          f"{', '.join(manifest['left_out']) or 'nothing'})")


if __name__ == "__main__":
    main()
