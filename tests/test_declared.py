"""A team's own models: backbones declared in a suite file (timm checkpoints written here,
with and without a head), their errors, entry points, and the [upgrade] gate."""

import importlib
import json
from pathlib import Path

import pytest
import timm  # noqa: F401  (loaded once: pytester's in-process runs drop extension modules)
import torch

from harness.backbones import BACKBONES
from harness.backbones.build import build_model
from harness.backbones.declared import BackboneTable, complete, declared_backbone
from harness.backbones.weights import resolve
from harness.errors import SuiteError, WeightsError, WeightsUnavailable
from harness.suite import load_suite

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Lite0 (the package's ImageNet weights, in timm's key names): headless, with a
    37-class head as a team's fine-tune has, and with heavy noise (one standard deviation
    of each tensor) on every conv and linear weight."""
    from safetensors.torch import save_file

    spec = BACKBONES.get("effnet-lite0")
    state = build_model(spec, resolve(spec)).state_dict()
    out = tmp_path_factory.mktemp("models")
    save_file({k: v.contiguous() for k, v in state.items()}, out / "v1.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, out / "v1-copy.safetensors")
    head = {"classifier.weight": torch.randn(37, 1280), "classifier.bias": torch.zeros(37)}
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in {**state, **head}.items()}},
        out / "v1-head.pth",
    )
    generator = torch.Generator().manual_seed(0)
    noisy = {  # conv and linear weights; noised BN statistics could turn negative
        k: v + v.std() * torch.randn(v.shape, generator=generator) if v.ndim > 1 else v
        for k, v in state.items()
    }
    save_file({k: v.contiguous() for k, v in noisy.items()}, out / "v2-noisy.safetensors")
    return out


def declared(name, base, **table):
    return declared_backbone(name, BackboneTable(**table), base / "suite.toml")


def embed_one(spec, images):
    model = build_model(spec, resolve(spec))
    with torch.no_grad():
        return model(images)


def test_a_checkpoint_with_a_head_loads_without_it_and_equals_the_headless_one(checkpoints):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    headless = declared(
        "t-headless", checkpoints, timm="tf_efficientnet_lite0", weights="v1.safetensors"
    )
    with_head = declared("t-head", checkpoints, timm="tf_efficientnet_lite0", weights="v1-head.pth")
    torch.testing.assert_close(embed_one(with_head, images), embed_one(headless, images))
    package = BACKBONES.get("effnet-lite0")
    torch.testing.assert_close(embed_one(headless, images), embed_one(package, images))
    assert resolve(headless).sha256 != resolve(with_head).sha256  # the file's, in the key


def test_preprocessing_comes_from_timm_and_the_table_overrides_it(checkpoints):
    spec = declared(
        "t-pre", checkpoints, timm="tf_efficientnet_lite0", weights="v1.safetensors", crop_pct=1.0
    )
    assert spec.preprocess is None  # collection imports no timm
    pre = complete(spec).preprocess
    assert (pre.size, pre.interpolation, pre.mean, pre.crop_pct) == (
        224,
        "bicubic",
        (0.5, 0.5, 0.5),
        1.0,
    )


def test_the_librarys_preprocessing_is_remembered_per_library_version(
    checkpoints, monkeypatch, extend
):
    """A warm run reads the remembered config instead of importing the library; another
    library version, or a file whose key was changed, is computed again."""
    from harness.backbones import declared as module

    spec = declared("t-memo", checkpoints, timm="tf_efficientnet_lite0", weights="v1.safetensors")
    first = module.library_preprocess(spec)
    from dataclasses import replace

    from harness.backbones.libraries import LIBRARIES

    computed = []
    timm_library = LIBRARIES.get("timm")
    counting = replace(
        timm_library, preprocess=lambda s: computed.append(s) or timm_library.preprocess(s)
    )
    extend(LIBRARIES, counting)
    assert module.library_preprocess(spec) == first and not computed
    (path,) = (module.cache_root() / "library-preprocess").glob("*.json")
    saved = json.loads(path.read_text())
    saved["key"]["model"] = "resnet50"
    path.write_text(json.dumps(saved))
    assert module.library_preprocess(spec) == first and len(computed) == 1
    monkeypatch.setattr(module, "version", lambda distribution: "0.0.1")
    assert module.library_preprocess(spec) == first and len(computed) == 2


@pytest.mark.parametrize("zipped", [True, False], ids=["zip-format", "legacy-format"])
def test_an_open_clip_checkpoint_declared_in_a_suite_embeds_as_the_registry_entry(tmp_path, zipped):
    """The tiny open_clip config, its weights saved to a file: the declared entry gets
    open_clip's preprocessing for the config and the same embeddings as the entry, built
    uninitialised and the file mapped (zip format) or read (legacy format)."""
    entry = BACKBONES.get("test-clip")
    tower = build_model(entry, resolve(entry))
    torch.save(tower.clip.state_dict(), tmp_path / "clip.pt", _use_new_zipfile_serialization=zipped)
    spec = complete(declared("t-clip", tmp_path, open_clip=entry.model, weights="clip.pt"))
    assert (spec.preprocess.size, spec.preprocess.mean) == (32, entry.preprocess.mean)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(embed_one(spec, images), embed_one(entry, images))


@pytest.mark.parametrize(
    ("table", "error", "message"),
    [
        (
            {"timm": "tf_efficientnet_lit0", "weights": "v1.safetensors"},
            SuiteError,
            "timm has no model 'tf_efficientnet_lit0'; did you mean tf_efficientnet_lite0",
        ),
        (
            {"timm": "tf_efficientnet_lite1", "weights": "v1.safetensors"},
            WeightsError,
            r"do not fit tf_efficientnet_lite1: missing key 'blocks.1.2.conv_pw.weight' \(and 74",
        ),
        (
            {"timm": "resnet18", "weights": "v1.safetensors"},
            WeightsError,
            r"do not fit resnet18: size mismatch for bn1.weight: copying a param with shape",
        ),
        (
            {"timm": "tf_efficientnet_lite0", "weights": "absent.safetensors"},
            WeightsUnavailable,
            r"absent.safetensors does not exist",
        ),
    ],
)
def test_a_wrong_declaration_is_one_line(checkpoints, table, error, message):
    spec = declared("t-wrong", checkpoints, **table)
    with pytest.raises(error, match=message) as caught:
        embed_one(complete(spec), torch.rand(1, 3, 32, 32))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('timm = "resnet18"', "needs exactly one of weights"),
        ('timm = "resnet18"\nopen_clip = "ViT-B-32"\nweights = "random"', "one of timm"),
        ('timm = "resnet18"\nweights = "random"\nfamily = "big"', 'family = "big": must be one of'),
        ('timm = "resnet18"\nweights = "random"\nwidth = 3', "unknown key 'width'"),
    ],
)
def test_a_backbone_table_mistake_names_the_file_and_key(tmp_path, lines, message):
    (tmp_path / "s.toml").write_text(f"[backbones.mine]\n{lines}\n")
    with pytest.raises(SuiteError, match=message) as caught:
        load_suite(tmp_path / "s.toml")
    assert str(caught.value).startswith(f"{tmp_path / 's.toml'}: [backbones.mine]")


def test_a_random_entry_uses_a_user_file_and_a_hub_entry_without_files_says_how(
    tmp_path, monkeypatch
):
    from dataclasses import replace

    from harness.backbones.base import Weights

    monkeypatch.setenv("SHELFBENCH_WEIGHTS", str(tmp_path))
    spec = BACKBONES.get("test-vit")
    torch.save(build_model(spec, resolve(spec)).state_dict(), tmp_path / "test-vit.pth")
    assert resolve(spec).origin == "user"
    hub = replace(spec, name="no-files", weights=Weights(source="hub"))
    with pytest.raises(WeightsUnavailable, match="no hub hosts them for timm"):
        resolve(hub)


def test_entry_points_register_a_packages_backbones(monkeypatch):
    from dataclasses import replace

    from harness import catalogue
    from harness.backbones import declared as module

    offered = replace(BACKBONES.get("test-vit"), name="from-a-package")

    class Point:
        name, value = "team", "team_models:BACKBONES"

        def load(self):
            return [offered]

    monkeypatch.setattr(module, "entry_points", lambda group: [Point()])
    found = module.entry_point_backbones.__wrapped__()
    assert found == {"from-a-package": offered}
    monkeypatch.setattr(catalogue, "entry_point_backbones", lambda: found)
    assert catalogue.BUILT_IN.backbone("from-a-package") == offered
    assert "from-a-package" in {spec.name for spec in catalogue.BUILT_IN.all_backbones()}


def suite(candidate: str, weights: str, models: Path) -> str:
    """Lite0 against a candidate; pytester runs in this process, whose registry keeps
    each run's declarations, so each candidate has its own name."""
    return f"""
[profile]
n_train = 200
n_test = 300
image_size = 64
crop_pct = 1.0

[strategy.linear]
C = [10.0]

[backbones.team-v1]
timm = "tf_efficientnet_lite0"
weights = "{models / "v1.safetensors"}"

[backbones.{candidate}]
timm = "tf_efficientnet_lite0"
weights = "{models / weights}"

[[cells]]
datasets = ["fashion-mnist"]
backbones = ["team-v1", "{candidate}"]
strategies = ["knn", "linear"]

[upgrade]
incumbent = "team-v1"
candidate = "{candidate}"
max_drop = 0.01
"""


@pytest.mark.usefixtures("real_fashion_mnist")
def test_the_upgrade_gate_fails_a_noisy_candidate_and_passes_an_identical_one(
    pytester, write_suite, checkpoints
):
    write_suite(suite("team-v2", "v2-noisy.safetensors", checkpoints))
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        ["*team-v2/knn*the upgrade from team-v1 is worse: mmp@5: * → *, difference -*(95% CI*"]
    )
    result.stdout.fnmatch_lines(  # the terminal's upgrade table
        [
            "Upgrade: each candidate cell against the incumbent's*",
            "*fashion-mnist*knn*team-v1 → team-v2*mmp@5*worse beyond the tolerance*",
        ]
    )
    rows = {r["id"]: r for r in json.loads(Path("reports/latest.json").read_text())["cells"]}
    (knn,) = [c for c in rows["fashion-mnist/team-v2/knn"]["upgrade"] if c["metric"] == "mmp@5"]
    assert knn["regression"] and knn["high"] < -0.01
    moved = rows["fashion-mnist/team-v2/knn"]["changed"]  # the "what changed" gallery
    assert moved["against"] == "fashion-mnist/team-v1/knn" and moved["new"]["queries"]
    assert moved["old"]["queries"] == moved["new"]["queries"]
    assert "What changed against" in Path("reports/latest.html").read_text()
    assert "Upgrade: each candidate cell" in Path("reports/latest.md").read_text()

    write_suite(suite("team-v1-copy", "v1-copy.safetensors", checkpoints))
    result = pytester.runpytest()
    result.assert_outcomes(passed=4)
    rows = {r["id"]: r for r in json.loads(Path("reports/latest.json").read_text())["cells"]}
    for strategy in ("knn", "linear"):
        (gated,) = rows[f"fashion-mnist/team-v1-copy/{strategy}"]["upgrade"]
        assert gated["diff"] == 0.0 and gated["verdict"] == "no significant change"


def test_list_backbones_shows_a_suites_own(tmp_path, checkpoints, capsys):
    from harness.cli import main

    weights = checkpoints / "v1.safetensors"
    (tmp_path / "s.toml").write_text(
        f'[backbones.team-list]\ntimm = "tf_efficientnet_lite0"\nweights = "{weights}"\n'
    )
    main(["list", "backbones", "--suite", str(tmp_path / "s.toml")])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("team-list"))
    assert "tf_efficientnet_lite0" in line and "from model" in line and "suite" in line


ENCODER = """
import torch


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def build():
    return Encoder()


def not_a_module():
    return "nope"


def needs_width(width):
    return Encoder()


class Pool(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def parameter_free():
    return Pool()
"""


def test_a_teams_own_encoder_declared_as_a_module_runs_a_cell(tmp_path, monkeypatch):
    """module = "pkg:function": the factory's module, its preprocessing from the table,
    its width from a forward pass, and its weights file loaded strictly."""
    from harness.cell import run_cell

    (tmp_path / "team_encoders.py").write_text(ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("team_encoders")
    torch.manual_seed(1)
    torch.save(module.Encoder().state_dict(), tmp_path / "encoder.pt")
    (tmp_path / "s.toml").write_text(
        """
[backbones.team-encoder]
module = "team_encoders:build"
weights = "encoder.pt"
image_size = 32
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]

[backbones.team-broken]
module = "team_encoders:not_a_module"
image_size = 32
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]

[[cells]]
datasets = ["synthetic-products"]
backbones = ["team-encoder", "team-broken"]
strategies = ["knn"]
"""
    )
    good, broken = load_suite(tmp_path / "s.toml").cells
    result = run_cell(good, tmp_path / "cache")
    assert (
        result.preprocess["size"] == 32
        and result.weights_sha256 == resolve(good.backbone_spec).sha256
    )
    with pytest.raises(WeightsError, match=r"not_a_module\(\) returned str, not a torch.nn.Module"):
        run_cell(broken, tmp_path / "cache")


def test_a_cells_context_hashes_its_weights_and_leaves_a_missing_file_to_embed(
    tmp_path, monkeypatch
):
    """The context hashes the weight file beside the library import, into the memo embed
    reads; a weights file that is not there fails the cell where it always did, in embed,
    with the line that says where it was looked for."""
    from harness.cell import context, run_cell

    monkeypatch.setenv("SHELFBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "team_encoders.py").write_text(ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(importlib.import_module("team_encoders").Encoder().state_dict(), tmp_path / "e.pt")
    table = 'module = "team_encoders:build"\nimage_size = 32\nmean = [0.5, 0.5, 0.5]\n'
    table += "std = [0.5, 0.5, 0.5]\n"
    (tmp_path / "s.toml").write_text(
        f'[backbones.there]\n{table}weights = "e.pt"\n[backbones.gone]\n{table}'
        'weights = "gone.pt"\n[[cells]]\ndatasets = ["synthetic-products"]\n'
        'backbones = ["there", "gone"]\nstrategies = ["knn"]\n'
    )
    there, gone = load_suite(tmp_path / "s.toml").cells
    context(there, tmp_path / "cache")
    memo = json.loads((tmp_path / "cache" / "weights-sha256.json").read_text())
    assert memo[str((tmp_path / "e.pt").resolve())][2] == resolve(there.backbone_spec).sha256
    context(gone, tmp_path / "cache")
    with pytest.raises(WeightsUnavailable, match=r"gone\.pt does not exist"):
        run_cell(gone, tmp_path / "cache")


def test_a_factory_that_raises_is_one_line_and_a_parameter_free_encoder_runs(tmp_path, monkeypatch):
    from harness.cell import run_cell

    (tmp_path / "team_encoders2.py").write_text(ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    table = "image_size = 32\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n"
    (tmp_path / "s.toml").write_text(
        f'[backbones.team-args]\nmodule = "team_encoders2:needs_width"\n{table}'
        f'[backbones.team-pool]\nmodule = "team_encoders2:parameter_free"\n{table}'
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["team-args", "team-pool"]\n'
        'strategies = ["knn"]\n'
    )
    broken, pool = load_suite(tmp_path / "s.toml").cells
    with pytest.raises(WeightsError) as caught:
        run_cell(broken, tmp_path / "cache")
    assert str(caught.value).startswith(
        "backbone team-args (team_encoders2:needs_width, random init): TypeError: "
    ) and "\n" not in str(caught.value)
    result = run_cell(pool, tmp_path / "cache")  # no parameters: FLOPs still counted
    assert result.cost.gflops_per_image >= 0 and result.metrics["accuracy"] > 0


def test_a_module_entry_must_declare_its_preprocessing(tmp_path):
    (tmp_path / "s.toml").write_text('[backbones.m]\nmodule = "x:build"\nimage_size = 32\n')
    with pytest.raises(SuiteError, match="a module entry declares its preprocessing"):
        load_suite(tmp_path / "s.toml")


def test_collecting_a_suite_with_declared_backbones_imports_no_model_library(tmp_path, checkpoints):
    import subprocess
    import sys

    text = suite("team-v2", "v2-noisy.safetensors", checkpoints)
    (tmp_path / "suite.toml").write_text('[suite]\nname = "team"\n' + text)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "not-a-suite"\n')
    code = (
        "import sys, pytest\n"
        f"assert pytest.main(['--collect-only', '-q', {str(tmp_path)!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'timm', 'open_clip', 'torchvision') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "4 tests collected" in out and out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("upgrade", "message"),
    [
        ('incumbent = "test-vit"\ncandidate = "nope"', "candidate = 'nope' is the backbone of no"),
        ('incumbent = "test-vit"\ncandidate = "test-clip"', "share no dataset and strategy"),
        ('incumbent = "test-vit"', "the key 'candidate' is missing"),
        (
            'incumbent = "test-vit"\ncandidate = "test-vit"',
            r"\[upgrade\]: incumbent and candidate are both 'test-vit': a backbone compared with",
        ),
    ],
)
def test_an_upgrade_that_pairs_nothing_is_one_line(tmp_path, upgrade, message):
    (tmp_path / "s.toml").write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        'strategies = ["knn"]\n[[cells]]\ndatasets = ["synthetic-shelf"]\n'
        f'backbones = ["test-clip"]\nstrategies = ["knn"]\n[upgrade]\n{upgrade}\n'
    )
    with pytest.raises(SuiteError, match=message) as caught:
        load_suite(tmp_path / "s.toml")
    assert "\n" not in str(caught.value)


UNPAIRED = """
[profile]
image_size = 32
batch_size = 64

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-vit", "test-clip"]
strategies = ["knn"]

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-clip"]
strategies = ["zeroshot"]

[upgrade]
incumbent = "test-vit"
candidate = "test-clip"
"""


def test_a_candidate_cell_without_an_incumbent_twin_says_it_was_not_gated(pytester, write_suite):
    write_suite(UNPAIRED)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    line = "*synthetic-products/test-clip/zeroshot: the suite has no test-vit cell of the same*"
    result.stdout.fnmatch_lines([f"warning {line}"])
    rows = {r["id"]: r for r in json.loads(Path("reports/latest.json").read_text())["cells"]}
    assert (
        "[upgrade] did not gate it" in rows["synthetic-products/test-clip/zeroshot"]["warnings"][0]
    )
    assert rows["synthetic-products/test-clip/knn"]["upgrade"]  # its twin exists: gated


def test_a_declared_hub_backbone_missing_here_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "s.toml").write_text('[backbones.team-hub]\ntimm = "resnet18"\nhf_hub = "org/m"\n')
    suite = load_suite(tmp_path / "s.toml")
    with pytest.raises(WeightsUnavailable) as caught:
        resolve(suite.catalogue.backbone("team-hub"))
    assert f"run `shelfbench weights fetch {tmp_path / 's.toml'}`" in str(caught.value)
