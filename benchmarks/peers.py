"""Optional peers and optional jaxbuf features, imported once with the reason they are missing.

Each entry is ``(module or None, reason)``; a workload whose library is missing reports
``not available: <reason>`` instead of failing, so the harness runs on any checkout.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any


@cache
def module(name: str) -> tuple[ModuleType | None, str]:
    """Import ``name``; return ``(module, "")`` or ``(None, reason)``."""
    try:
        return importlib.import_module(name), ""
    except Exception as err:  # any import failure means "not available"
        return None, f"import {name} failed: {type(err).__name__}: {err}"


def jaxbuf_attr(*paths: str) -> tuple[Any | None, str]:
    """The first of ``jaxbuf.<path>`` (e.g. ``returns.gae``) the checked-out jaxbuf has."""
    reasons = []
    for path in paths:
        parts = path.split(".")
        mod, reason = module(".".join(["jaxbuf", *parts[:-1]]))
        obj = None if mod is None else getattr(mod, parts[-1], None)
        if obj is not None:
            return obj, ""
        reasons.append(reason or f"jaxbuf.{path} is not in this checkout (branch not merged yet)")
    return None, "; ".join(reasons)
