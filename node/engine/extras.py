"""What the in-process engines need beyond the base install, and the error that says how to get it.

The base install (``pip install qoq-node``) runs the ``openai`` and ``replay`` backends: the node makes
the model's inputs itself (:mod:`node.model.resize`), so it needs neither torch nor transformers. The
``transformers`` backend and the tiny test model need the ``[transformers]`` extra; the
``tensorrt-llm`` backend the ``[gpu]`` extra (which includes it).
"""

from __future__ import annotations

import importlib.util

from node.engine.errors import EngineLoadError

#: The modules of the ``[transformers]`` extra (its distributions: torch, torchvision, transformers, tokenizers).
TRANSFORMERS_MODULES = ("torch", "torchvision", "transformers", "tokenizers")
TRANSFORMERS_INSTALL = "pip install 'qoq-node[transformers]'"


def missing_modules(modules: tuple[str, ...] = TRANSFORMERS_MODULES) -> list[str]:
    """Those of ``modules`` this environment cannot import (found without importing them)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_transformers(purpose: str) -> None:
    """Raise :class:`EngineLoadError` naming the extra to install when the ``[transformers]`` extra's
    modules are not installed; ``purpose`` says what needs them (e.g. "the transformers backend")."""
    missing = missing_modules()
    if missing:
        raise EngineLoadError(f"{purpose} needs {', '.join(missing)}, which this install lacks (the base install "
                              f"runs the openai and replay backends only): {TRANSFORMERS_INSTALL}, or set "
                              "engine.backend to openai (a remote engine server) or replay")


def require_backend_installed(backend: str) -> None:
    """Refuse a configured ``engine.backend`` whose packages are not installed (before anything loads)."""
    if backend == "transformers":
        require_transformers("the transformers backend (and its tiny test model when engine.model is unset)")
