"""bf16 against fp32 per model library, through shelfbench's own extraction context, on a
CPU that multiplies bf16 faster (``runtime.cpu_has_bf16``; skipped elsewhere, where fp32 is
what `auto` runs).

The trap this catches: since torch 2.10, autocast does not cache its bf16 copies of the
weights under ``torch.inference_mode()`` (pytorch#165068), so each batch casts every
weight again; an open_clip ViT-B-32 then ran 3.3x slower in bf16 under inference_mode than
under ``torch.no_grad()`` on an AMX Xeon (2026-11-30). shelfbench's ``grad_off`` uses
no_grad where it autocasts. Read the ratios within a group.
"""

from typing import Any

import pytest

from harness.runtime import computing_at, cpu_has_bf16, grad_off

pytestmark = pytest.mark.skipif(not cpu_has_bf16(), reason="bf16 is not faster on this CPU")
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


@pytest.mark.parametrize(
    "mode", ["fp32 (shelfbench)", "bf16 (shelfbench)", "bf16 under inference_mode (the trap)"]
)
def test_embed_32_images_at_224_px(benchmark: Any, model: tuple[str, Any], mode: str) -> None:
    import torch

    name, net = model
    benchmark.group = f"embed {name}, 32 images at 224 px"
    x = torch.rand(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    precision = "fp32" if mode.startswith("fp32") else "bf16"
    grad = torch.inference_mode if "trap" in mode else lambda: grad_off(precision)

    def run() -> Any:
        with grad(), computing_at(precision, "cpu"):
            return net(x)

    benchmark.pedantic(run, **ROUNDS)
