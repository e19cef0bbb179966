"""bf16 against fp32 per model library, through shelfbench's own extraction context, on a
CPU that multiplies bf16 faster (``runtime.cpu_has_bf16``; skipped elsewhere, where fp32 is
what `auto` runs); and fp32 with its products through oneDNN (``harness.onednn``, where a
timed product says it pays) against torch's own (MKL), on every CPU. On a 2-vCPU AMD EPYC
(avx512_bf16, no amx_bf16; 2026-12-05) oneDNN's products embedded the open_clip ViT-B-32
1.8x faster; where oneDNN does not pay, both run torch's own and the ratio is 1.

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


@pytest.mark.skipif(not cpu_has_bf16(), reason="bf16 is not faster on this CPU")
@pytest.mark.parametrize(
    "mode", ["fp32 (shelfbench)", "bf16 (shelfbench)", "bf16 under inference_mode (the trap)"]
)
def test_embed_32_images_at_224_px(benchmark: Any, model: tuple[str, Any], mode: str) -> None:
    import torch

    name, net = model
    benchmark.group = f"embed {name}, 32 images at 224 px"
    x = torch.rand(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    precision = "fp32" if mode.startswith("fp32") else "bf16"

    def run() -> Any:
        if "trap" in mode:
            with torch.inference_mode(), computing_at(precision, "cpu"):
                return net(x)
        with extracting(precision, "cpu"):
            return net(x)

    benchmark.pedantic(run, **ROUNDS)


@pytest.mark.parametrize("mode", ["shelfbench", "torch's own products"])
def test_embed_32_images_at_224_px_in_fp32(
    benchmark: Any, model: tuple[str, Any], mode: str
) -> None:
    import torch

    from harness.runtime import onednn_speedup

    name, net = model
    benchmark.group = f"embed {name}, 32 images at 224 px, fp32"
    benchmark.extra_info["onednn_speedup"] = onednn_speedup()
    x = torch.rand(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def run() -> Any:
        if mode == "shelfbench":
            with extracting("fp32", "cpu"):
                return net(x)
        with torch.inference_mode(), computing_at("fp32", "cpu"):
            return net(x)

    benchmark.pedantic(run, **ROUNDS)
