"""torch and the model libraries, imported once per process with Python's cyclic garbage
collector paused, then frozen.

Importing open_clip creates about 670,000 objects (torch, torchvision, torch._dynamo,
sympy, timm) that live until the process exits. Left to the collector, every full
collection walks them again: three during the import, pytest's closing one and the
interpreter's exit. Frozen (``gc.freeze``), they are skipped (docs/measurements.md). The
freeze happens once, at a process's first library load, before any model is built: what
was alive then stays, cycles included (about 9,500 objects the open_clip import left),
never freed; objects made afterwards are collected as before.
"""

from __future__ import annotations

import gc
import importlib

_frozen = False


def import_frozen(*modules: str) -> None:
    """Import ``modules``. The first call in a process imports them with the collector
    paused, then freezes everything alive, whatever was imported before; every model build
    loads its library first (``libraries.load``), so no model is frozen. Later calls
    import as usual."""
    global _frozen
    if _frozen:
        for name in modules:
            importlib.import_module(name)
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        _frozen = True
        if enabled:
            gc.enable()
