"""Build a wheelhouse for installing qoq-node on an air-gapped GPU host (run on a connected machine).

    python deploy/offline/build_wheelhouse.py --out wheelhouse                       # this machine's Python
    python deploy/offline/build_wheelhouse.py --out wheelhouse --python-version 3.12  # a Python 3.12 host
    python deploy/offline/build_wheelhouse.py --out wheelhouse-3.12 --python-version 3.12 \\
        --host deploy/offline/hosts/reference-gpu.txt --with onnxscript                # the reference host, benchmark

Writes into ``--out``: the node's own wheel, every wheel it needs for the target Python and platform
(binary wheels only: nothing is built on the host) *except* what the host already has, pip's own wheel
(install.sh runs pip from it), ``requirements.txt`` (what install.sh installs: the node with its
:data:`EXTRAS`, and each ``--with``), ``SHA256SUMS``, ``manifest.json`` (target, packages, sizes, what was
left out and why) and a copy of ``install.sh``. What the host has: ``--host-provides`` (torch, torchvision,
triton, nvidia-* and their own requirements such as numpy and pillow, versions unknown) and, with
``--host FILE``, the packages pinned there (``name==version`` lines, e.g. hosts/reference-gpu.txt): the
closure is then resolved with those pins as constraints — the build stops if the host's versions do not
fit the node's ranges — and every wheel the node reaches only through a host package is left out too
(transformers' own needs, where the host has transformers). It refuses to finish above ``--max-mib``
(60 MiB: files are carried to such hosts at most 64 MiB at a time). ``--with onnxscript`` carries what
benchmarks/gpu.py's vision tower step needs besides the node to time the tower on ONNX Runtime
(torch.onnx.export needs onnxscript; the reference host has onnx and onnxruntime, not onnxscript). Then, on the host:
``PYTHON=host-python bash install.sh WHEELHOUSE VENV``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from wheel_graph import InvalidRequirement, Requirement, WheelGraph, normalise, wheel_project

REPO = Path(__file__).resolve().parents[2]
#: What a GPU host with a CUDA PyTorch brings: torch, torchvision, their GPU runtime and their requirements.
#: Not typing-extensions: the node's pydantic needs a newer one (>= 4.16) than such a host may have.
HOST_PROVIDES = ("torch", "torchvision", "triton", "nvidia-*", "numpy", "pillow", "sympy", "mpmath", "networkx",
                 "jinja2", "markupsafe", "filelock", "fsspec")
#: The extras a GPU host installs: the in-process reference engine (transformers, next to the host's torch);
#: install.sh installs qoq-node with the same. Not [evaluate]: matplotlib and its needs would take the
#: wheelhouse past --max-mib (64 MiB measured with it).
EXTRAS = ("transformers",)
#: Carried although no requirement of the node's names them: pip, which install.sh runs from its wheel (a host
#: Python may have no pip, nor ensurepip); setuptools, which torch requires (>= 77.0.3 for torch 2.14) and a
#: host whose torch was installed without its requirements may lack.
CARRIED_FOR_THE_HOST = ("pip", "setuptools")
#: manylinux tags of an x86_64 Linux host (glibc 2.17 and later).
LINUX_X86_64 = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
#: What the node's wheel is built from (a copy of them: a build in the checkout would leave build/ there).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "node")


def is_host_provided(name: str, host_provides: tuple[str, ...]) -> bool:
    """Whether ``name`` is one the host brings (a trailing ``*`` matches a prefix)."""
    name = normalise(name)
    return any(name.startswith(normalise(p[:-1])) if p.endswith("*") else name == normalise(p) for p in host_provides)


def declared_requirements() -> list[Requirement]:
    """The node's declared dependencies and those of its :data:`EXTRAS`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in
            [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]]


def read_host(path: Path) -> dict[str, str]:
    """The pinned packages of a host file (pip requirements form, ``name==version`` lines), by project name."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise SystemExit(f"{path}:{number}: not a requirement ({error})") from None
        [specifier] = list(requirement.specifier) or [None]
        if specifier is None or specifier.operator != "==" or requirement.marker or requirement.extras:
            raise SystemExit(f"{path}:{number}: a host file pins each package as name==version, not {text!r}")
        pins[normalise(requirement.name)] = specifier.version
    return pins


def check_host_fits(pins: dict[str, str], host_file: Path) -> None:
    """Stop, naming them, if the host's pinned versions miss the node's declared ranges."""
    misses = [f"the host has {r.name} {pins[normalise(r.name)]}, the node needs {r}" for r in declared_requirements()
              if normalise(r.name) in pins and not r.specifier.contains(pins[normalise(r.name)], prereleases=True)]
    if misses:
        raise SystemExit(f"{host_file} does not fit the node's requirements: " + "; ".join(misses))


def build_node_wheel(out: Path) -> None:
    """The node's wheel into ``out``, built from a temporary copy of its sources (the checkout stays clean)."""
    with tempfile.TemporaryDirectory(prefix="qoq-node-wheel-") as temporary:
        for name in WHEEL_SOURCES:
            source, target = REPO / name, Path(temporary) / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(source, target)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
                        temporary], check=True)


def download(requirements: list[str], out: Path, python_version: str | None, platforms: tuple[str, ...],
             constraints: Path | None) -> None:
    """``pip download`` binary wheels of ``requirements`` (and theirs) for the target into ``out``."""
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(out),
               "--disable-pip-version-check", "--quiet"]
    if python_version:
        command += ["--python-version", python_version, "--implementation", "cp",
                    "--abi", f"cp{python_version.replace('.', '')}"]
        for platform in platforms:
            command += ["--platform", platform]
    if constraints:
        command += ["--constraint", str(constraints)]
    if subprocess.run([*command, *requirements]).returncode != 0:
        raise SystemExit("pip could not download the node's requirements for the target"
                         + (f" with the host's versions in {constraints} as constraints (pip says why above)"
                            if constraints else ""))


def left_out(graph: WheelGraph, kept: set[str], host: Callable[[str], bool], pins: dict[str, str],
             python: str) -> dict[str, str]:
    """Each downloaded wheel not in ``kept``, with why: the host has it, or only the host's packages need it."""
    host_wheels = sorted(name for name in graph.wheels if host(name))
    reasons = {}
    for name in sorted(set(graph.wheels) - kept):
        if host(name):
            reasons[graph.wheels[name].name] = (f"the host has it ({pins[name]})" if name in pins
                                                else "the host has it (with its torch)")
            continue
        via = [provider for provider in host_wheels
               if name in graph.reach([Requirement(provider)], lambda n: n not in graph.wheels)]
        reasons[graph.wheels[name].name] = (f"needed only by what the host has ({', '.join(via)})" if via
                                            else f"not needed on Python {python} (its markers)")
    return reasons


def build(out: Path, python_version: str | None, platforms: tuple[str, ...], host_provides: tuple[str, ...],
          max_mib: float, host_file: Path | None = None, also: tuple[str, ...] = ()) -> dict:
    """Fill ``out`` and return its manifest; ``also``: requirements carried and installed besides the node."""
    pins = read_host(host_file) if host_file else {}
    if host_file:
        check_host_fits(pins, host_file)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give an empty or new --out (a wheelhouse holds one version of each)")
    out.mkdir(parents=True, exist_ok=True)
    build_node_wheel(out)
    wanted = [str(r) for r in declared_requirements() if not is_host_provided(r.name, host_provides)]
    download([*wanted, *also, *CARRIED_FOR_THE_HOST], out, python_version, platforms, host_file)
    graph = WheelGraph(out, python_version)

    def host(name: str) -> bool:
        return is_host_provided(name, host_provides) or name in pins

    installed = [f"qoq-node[{','.join(EXTRAS)}]", *also]
    roots = [*map(Requirement, installed), *map(Requirement, CARRIED_FOR_THE_HOST)]
    python = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        kept = graph.reach(roots, host)
    except LookupError as error:
        raise SystemExit(f"the wheelhouse for Python {python} is incomplete: {error}") from None
    dropped = left_out(graph, kept, host, pins, python)
    for name in dropped:
        (out / name).unlink()
    shutil.copyfile(Path(__file__).with_name("install.sh"), out / "install.sh")
    (out / "requirements.txt").write_text("".join(f"{r}\n" for r in installed))
    wheels = sorted(out.glob("*.whl"))
    (out / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                                            for p in [*wheels, out / "requirements.txt"]))
    total = sum(w.stat().st_size for w in wheels)
    manifest = {
        "python_version": python, "platforms": list(platforms) if python_version else ["this machine's"],
        "host_provides": list(host_provides), "host": {"file": host_file.name, "pins": pins} if host_file else None,
        "installs": installed, "left_out": dropped, "wheels": {w.name: w.stat().st_size for w in wheels},
        "total_bytes": total,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if total > max_mib * 2**20:
        raise SystemExit(f"the wheelhouse holds {total / 2**20:.1f} MiB, above --max-mib {max_mib}; "
                         "leave out what the host has with --host or --host-provides")
    return manifest


def main() -> None:
    """Build the wheelhouse and say what it holds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python-version", default=None, help="the host's Python, e.g. 3.12 (default: this one's)")
    parser.add_argument("--platform", action="append", default=None,
                        help=f"a wheel platform tag the host takes (repeatable; default {' '.join(LINUX_X86_64)})")
    parser.add_argument("--host-provides", nargs="+", default=list(HOST_PROVIDES),
                        help="projects the host already has, versions unknown (a trailing * matches a prefix)")
    parser.add_argument("--host", type=Path, default=None,
                        help="the host's packages as name==version lines (e.g. deploy/offline/hosts/reference-gpu.txt)")
    parser.add_argument("--with", dest="also", action="append", default=[],
                        help="a requirement to carry and install besides the node (repeatable; e.g. onnxscript "
                             "for benchmarks/gpu.py)")
    parser.add_argument("--max-mib", type=float, default=60.0)
    args = parser.parse_args()
    manifest = build(args.out, args.python_version, tuple(args.platform or LINUX_X86_64), tuple(args.host_provides),
                     args.max_mib, args.host, tuple(args.also))
    print(f"{len(manifest['wheels'])} wheels, {manifest['total_bytes'] / 2**20:.1f} MiB, for Python "
          f"{manifest['python_version']} in {args.out}; left out ({len(manifest['left_out'])}, see manifest.json): "
          f"{', '.join(sorted(wheel_project(Path(w)) for w in manifest['left_out'])) or 'nothing'}")


if __name__ == "__main__":
    main()
