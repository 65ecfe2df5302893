"""Optional peers (flashbax, rlax, Tianshou, gymnax, torch), imported once with the reason they
are missing.

Each entry is ``(module or None, reason)``; a workload whose peer is missing reports a row
``skipped: not installed (<name>)`` instead of failing, so the harness runs anywhere jaxbuf does.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType


@cache
def module(name: str) -> tuple[ModuleType | None, str]:
    """Import ``name``; return ``(module, "")`` or ``(None, reason)``."""
    try:
        return importlib.import_module(name), ""
    except ModuleNotFoundError as err:
        missing = err.name or name
        if missing.split(".")[0] == name.split(".")[0]:
            return None, f"not installed ({missing})"
        return None, f"not installed ({missing}, needed by {name})"
    except Exception as err:  # any other import failure also means "skipped"
        return None, f"import {name} failed: {type(err).__name__}: {err}"
