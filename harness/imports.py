"""torch and the model libraries, imported once per process with Python's cyclic garbage
collector paused, then frozen.

Importing open_clip creates about 670,000 objects (torch, torchvision, torch._dynamo,
sympy, timm) that live until the process exits. Left to the collector, every full
collection walks them again: three during the import, pytest's closing one and the
interpreter's exit. Frozen (``gc.freeze``), they are skipped (docs/measurements.md). The
freeze happens once, at the first such import, before any model is built: what the import
left in cycles (about 9,500 objects for open_clip) stays with them, never freed; objects
made afterwards are collected as before.
"""

from __future__ import annotations

import gc
import importlib
import sys

_frozen = False


def import_frozen(*modules: str) -> None:
    """Import ``modules``; the first call that imports any does so with the collector
    paused and then freezes everything alive. Later calls import as usual."""
    global _frozen
    missing = [name for name in modules if name not in sys.modules]
    if _frozen or not missing:
        for name in missing:
            importlib.import_module(name)
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in missing:
            importlib.import_module(name)
    finally:
        gc.freeze()
        _frozen = True
        if enabled:
            gc.enable()
