"""The node's own exceptions share one root that says whether a failure will recur (issue 22)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import node
from node.errors import NodeError

#: Modules not imported here: a checkpoint's own modelling code (it needs torch's model classes).
NOT_IMPORTED = ("node.engine.omni_remote",)


def _node_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(node.__path__, "node.")
            if not info.name.startswith(NOT_IMPORTED) and info.name != "node.__main__"]


def test_every_exception_the_node_defines_is_a_node_error() -> None:
    defined = {}
    for name in _node_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                defined[f"{name}.{value.__qualname__}"] = value
    assert len(defined) >= 13, sorted(defined)
    strays = sorted(name for name, cls in defined.items() if not issubclass(cls, NodeError))
    assert strays == [], strays
