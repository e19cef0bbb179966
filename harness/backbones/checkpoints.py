"""Reading a checkpoint as the loaders do: tensors only (safetensors, or a weights-only
torch file), training wrappers unwrapped, every key fitting or the first misfit named."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backbones.base import BackboneSpec
from harness.errors import WeightsError

if TYPE_CHECKING:
    import torch


def load_state(path: Path) -> dict[str, Any]:
    """A state dict from safetensors or a weights-only torch file: never arbitrary pickles."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; all mean the same here
        raise WeightsError(
            f"{path} is not a weights-only checkpoint ({type(exc).__name__}); "
            "shelfbench loads only tensors, never arbitrary pickled objects"
        ) from None


def strict(model: torch.nn.Module, state: dict[str, Any], spec: BackboneSpec, path: Path) -> None:
    """Load every key or fail naming the first that does not fit."""
    where = f"weights for {spec.name} ({path}) do not fit {spec.identifier}"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape mismatch raises even when not strict
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("size mismatch")), lines[0])
        raise WeightsError(f"{where}: {first}") from None
    problems = [f"missing key {k!r}" for k in result.missing_keys]
    problems += [f"unexpected key {k!r}" for k in result.unexpected_keys]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise WeightsError(f"{where}: {problems[0]}{more}")


def unwrapped(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint's state dict: ``{"state_dict": ...}`` or ``{"model": ...}``
    unwrapped and DDP's ``module.`` prefix removed."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}
