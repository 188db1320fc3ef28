"""Lazy package facades: a package's public names load their module on first access (PEP 562),
so importing one submodule (say the NumPy-only copula data) does not load Pyro and every model."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for ``package`` whose public name ``n`` lives in the
    submodule ``exports[n]`` (relative, e.g. ``".gmrf"``)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        globals_of(package)[name] = value  # cache: later lookups skip this function
        return value

    def __dir__():
        return sorted(set(globals_of(package)) | set(exports))

    return __getattr__, __dir__


def globals_of(package: str) -> dict:
    import sys

    return vars(sys.modules[package])
