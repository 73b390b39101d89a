"""The requirement graph of a folder of wheels, read from their METADATA, for one target interpreter.

build_wheelhouse.py uses it to keep only the wheels the node needs through packages the host does *not*
provide: a walk from the node's wheel that stops at the host's packages.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable
from email.parser import HeaderParser
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # a Python without packaging: pip's copy (the build runs pip anyway)
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement

__all__ = ["InvalidRequirement", "Requirement", "WheelGraph", "normalise", "wheel_project"]


def normalise(name: str) -> str:
    """A project name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(path: Path) -> str:
    """The project a wheel file belongs to (its name up to the first dash)."""
    return normalise(path.name.split("-")[0])


def wheel_requirements(path: Path) -> list[Requirement]:
    """The ``Requires-Dist`` of a wheel's METADATA."""
    with zipfile.ZipFile(path) as wheel:
        [metadata] = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        headers = HeaderParser().parsestr(wheel.read(metadata).decode())
    return [Requirement(text) for text in headers.get_all("Requires-Dist") or []]


def target_environment(python_version: str | None) -> dict[str, str]:
    """Marker values of the target: this interpreter, or CPython ``python_version`` on Linux x86_64."""
    environment = dict(default_environment())
    if python_version:
        environment.update(python_version=python_version, python_full_version=f"{python_version}.0",
                           implementation_name="cpython", platform_python_implementation="CPython",
                           sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix")
    return environment


class WheelGraph:
    """The wheels of one folder, each with its requirements as the target evaluates them."""

    def __init__(self, folder: Path, python_version: str | None) -> None:
        self.wheels = {wheel_project(path): path for path in folder.glob("*.whl")}
        self.environment = target_environment(python_version)
        self._requirements = {name: wheel_requirements(path) for name, path in self.wheels.items()}

    def needs(self, name: str, extras: Iterable[str] = ()) -> list[Requirement]:
        """What project ``name`` asks for on the target, with the ``extras`` asked of it."""
        return [requirement for requirement in self._requirements.get(normalise(name), [])
                if requirement.marker is None
                or any(requirement.marker.evaluate({**self.environment, "extra": extra}) for extra in ("", *extras))]

    def reach(self, roots: Iterable[Requirement], stop: Callable[[str], bool]) -> set[str]:
        """The projects ``roots`` need on the target, themselves included, not walking past those ``stop`` names.

        A stopped project is left out too; a needed project without a wheel here is an error (the
        download missed a requirement that only the target's markers bring in).
        """
        reached: set[str] = set()
        seen: set[tuple[str, frozenset[str]]] = set()
        pending = [(normalise(r.name), frozenset(r.extras)) for r in roots
                   if r.marker is None or r.marker.evaluate(self.environment)]
        while pending:
            name, extras = pending.pop()
            if (name, extras) in seen or stop(name):
                continue
            seen.add((name, extras))
            if name not in self.wheels:
                raise LookupError(f"{name} is needed on the target but no wheel of it was downloaded")
            reached.add(name)
            pending += [(normalise(r.name), frozenset(r.extras)) for r in self.needs(name, extras)]
        return reached
