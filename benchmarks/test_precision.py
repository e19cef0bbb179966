"""Extraction's forward per model library, through shelfbench's own extraction context
against plain ``inference_mode``: fp32 with its products through oneDNN (``harness.onednn``,
where a timed product says it pays) against torch's own (MKL), on every CPU; and bf16 on a
CPU that multiplies bf16 faster (``runtime.cpu_has_bf16``; skipped elsewhere, where fp32 is
what `auto` runs). On a 2-vCPU AMD EPYC (avx512_bf16, no amx_bf16; 2026-12-05) oneDNN's
products made the fp32 forward 1.62x faster for the open_clip ViT-B-32 and 1.66x for timm's
ViT-B/16 (means of three rounds); where oneDNN does not pay, both modes run torch's own
and the ratio is 1.

The trap this catches: since torch 2.10, autocast does not cache its bf16 copies of the
weights under ``torch.inference_mode()`` (pytorch#165068), so each batch casts every
weight again; an open_clip ViT-B-32 then ran 3.3x slower in bf16 under inference_mode than
under ``torch.no_grad()`` on an AMX Xeon (2026-11-30). shelfbench's ``extracting`` uses
no_grad where it autocasts. Read the ratios within a group.
"""

from typing import Any

import pytest

from harness.runtime import computing_at, cpu_has_bf16, extracting

ROUNDS = {"rounds": 3, "iterations": 1, "warmup_rounds": 1}


def timm_vit() -> Any:
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()


def open_clip_vit() -> Any:
    import open_clip

    from harness.backbones.libraries.open_clip import image_tower

    return image_tower(open_clip.create_model("ViT-B-32", pretrained=None)).eval()


MODELS = {"timm vit_base_patch16_224": timm_vit, "open_clip ViT-B-32": open_clip_vit}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request: Any) -> tuple[str, Any]:
    return request.param, MODELS[request.param]()


# mode: (precision, through shelfbench's ``extracting``, else plain inference_mode)
MODES = {
    "fp32 (shelfbench)": ("fp32", True),
    "fp32, torch's own products": ("fp32", False),
    "bf16 (shelfbench)": ("bf16", True),
    "bf16 under inference_mode (the trap)": ("bf16", False),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_embed_32_images_at_224_px(benchmark: Any, model: tuple[str, Any], mode: str) -> None:
    import torch

    from harness.runtime import onednn_speedup

    precision, shelfbench = MODES[mode]
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("bf16 is not faster on this CPU")
    name, net = model
    benchmark.group = f"embed {name}, 32 images at 224 px"
    benchmark.extra_info["onednn_speedup"] = onednn_speedup()
    x = torch.rand(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def run() -> Any:
        if shelfbench:
            with extracting(precision, "cpu"):
                return net(x)
        with torch.inference_mode(), computing_at(precision, "cpu"):
            return net(x)

    benchmark.pedantic(run, **ROUNDS)
