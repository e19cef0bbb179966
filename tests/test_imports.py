"""Heavy imports frozen once (``harness.imports``), builds that skip initialisation a
strict load overwrites (``checkpoints.uninitialised``) and checkpoint files mapped
rather than read (``checkpoints.mapped_loads``)."""

import subprocess
import sys

import pytest
import torch

from harness.backbones.checkpoints import mapped_loads, uninitialised

FROZEN_ONCE = """
import gc
import sys
from harness.imports import import_frozen

assert gc.get_freeze_count() == 0
import_frozen("json")  # imported already (by harness): the first call freezes all the same
frozen = gc.get_freeze_count()
assert frozen > 0 and gc.isenabled(), (frozen, gc.isenabled())
import_frozen("fractions")  # a later call imports without freezing again
assert "fractions" in sys.modules and gc.get_freeze_count() == frozen
class Cycle:
    pass
a, b = Cycle(), Cycle()
a.other, b.other = b, a
del a, b
assert gc.collect() >= 2  # objects made after the freeze are still collected
print("ok")
"""


def test_the_first_library_load_freezes_the_heap_once_and_collection_goes_on():
    done = subprocess.run([sys.executable, "-c", FROZEN_ONCE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_uninitialised_skips_initialisers_and_restores_them_even_after_an_error():
    original = torch.nn.init.kaiming_uniform_
    torch.manual_seed(0)
    with uninitialised():
        torch.nn.Linear(64, 64)  # its reset_parameters draws nothing
    drawn_after_skip = torch.rand(1)
    torch.manual_seed(0)
    torch.nn.Linear(64, 64)
    assert not torch.equal(torch.rand(1), drawn_after_skip)  # an initialised one drew
    with pytest.raises(ValueError), uninitialised():
        raise ValueError
    assert torch.nn.init.kaiming_uniform_ is original


def test_mapped_loads_map_only_inside(tmp_path):
    from torch.utils.serialization import config

    torch.save({"w": torch.arange(4.0)}, tmp_path / "w.pt")
    with mapped_loads():
        assert config.load.mmap
        state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert not config.load.mmap
    assert torch.equal(state["w"], torch.arange(4.0))
