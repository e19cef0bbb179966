"""State-dict converters: weights published under another naming scheme, renamed for timm."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

StateDict = Mapping[str, Any]

_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# lukemelas block modules -> timm's, for a depthwise-separable block (no expansion) and an
# inverted-residual block (with expansion).
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lukemelas_efficientnet(state: StateDict, target_keys: list[str]) -> dict[str, Any]:
    """Rename lukemelas/EfficientNet-PyTorch keys to timm's ``tf_efficientnet*`` names.

    lukemelas numbers blocks flatly (``_blocks.7``); timm nests them by stage
    (``blocks.3.1``). The flat index is mapped to the n-th ``(stage, index)`` pair in the
    order timm's own state dict lists them, so no table of stage depths is needed.
    """
    stage_index: list[str] = []
    for key in target_keys:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.", key)
        if m and (pos := f"{m[1]}.{m[2]}") not in stage_index:
            stage_index.append(pos)
    expanding = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "_expand_conv" in k}
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            names = _INVERTED if parts[1] in expanding else _SEPARABLE
            new = ["blocks", stage_index[int(parts[1])], names[parts[2]], *parts[3:]]
        else:
            new = [_TOP[parts[0]], *parts[1:]]
        renamed[".".join(new)] = value
    return renamed


CONVERTERS: dict[str, Callable[[StateDict, list[str]], dict[str, Any]]] = {
    "lukemelas_efficientnet": lukemelas_efficientnet,
}
