"""Lazy public names for a package (PEP 562): a name is imported from its module on first use.

Importing the package then costs almost nothing; torch, onnxruntime and MLflow load only with the names
that need them (the pattern of ``optuna/__init__.py`` and ``optuna/_imports.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` resolving ``exports`` (public name → module path, absolute or
    relative to ``package``); each resolved value is cached in ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
