"""An [upgrade] gate on real data: EfficientNet-Lite0 against a copy of itself with noise on
its weights, both declared as a team's checkpoints in a suite file.

    python benchmarks/noised_upgrade.py OUT [--sigma 0.1] [--n-train 10000 --n-test 2000]
    pytest OUT/upgrade.toml --shelf-reports OUT/reports

writes OUT/models/lite0.safetensors (the package's ImageNet weights in timm's key names),
OUT/models/lite0-noised.safetensors (every conv and linear weight plus ``sigma`` times its
own standard deviation of seeded Gaussian noise) and OUT/upgrade.toml: the default suite's
profile, knn and linear cells for both, and [upgrade] lite0 → lite0-noised.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SUITE = """[suite]
name = "upgrade"

[profile]
n_train = {n_train}
n_test = {n_test}
image_size = 128
crop_pct = 1.0
batch_size = 32
seed = 0

[backbones.lite0]
timm = "tf_efficientnet_lite0"
weights = "models/lite0.safetensors"

[backbones.lite0-noised]
timm = "tf_efficientnet_lite0"
weights = "models/lite0-noised.safetensors"

[[cells]]
datasets = ["fashion-mnist"]
backbones = ["lite0", "lite0-noised"]
strategies = ["knn", "linear"]

[upgrade]
incumbent = "lite0"
candidate = "lite0-noised"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=10_000, help="10000: the default suite's")
    parser.add_argument("--n-test", type=int, default=2_000)
    args = parser.parse_args()
    import torch
    from safetensors.torch import save_file

    from harness.backbones import BACKBONES, resolve
    from harness.backbones.build import build_model

    spec = BACKBONES.get("effnet-lite0")
    state = {k: v.contiguous() for k, v in build_model(spec, resolve(spec)).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    noised = {
        k: v + args.sigma * v.std() * torch.randn(v.shape, generator=generator) if v.ndim > 1 else v
        for k, v in state.items()
    }
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    save_file(state, args.out / "models" / "lite0.safetensors")
    save_file(noised, args.out / "models" / "lite0-noised.safetensors")
    (args.out / "upgrade.toml").write_text(SUITE.format(n_train=args.n_train, n_test=args.n_test))
    print(f"pytest {args.out / 'upgrade.toml'} --shelf-reports {args.out / 'reports'}")


if __name__ == "__main__":
    main()
