"""fp32 products through oneDNN: the same results as torch's own, only where they may go."""

import pytest
import torch

from harness import onednn, runtime

pytestmark = pytest.mark.skipif(onednn.kernel() is None, reason="this torch has no oneDNN")


def model() -> torch.nn.Module:
    """Linear layers, a MultiheadAttention and a bare product, as a ViT's blocks have."""
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32)
            )
            self.proj = torch.nn.Parameter(torch.randn(32, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(x, x, x, need_weights=False)[0]
            return (x + self.mlp(x))[:, 0] @ self.proj

    return Block().eval()


@pytest.fixture
def unfused():
    """torch's MultiheadAttention as separate ops (its fused kernel hides its products)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(fast)


def test_products_give_torchs_results_through_onednn(unfused):
    block, x = model(), torch.randn(8, 10, 32)
    with torch.no_grad():
        plain = block(x)
        with onednn.Products() as products:
            redirected = block(x)
    # the attention's input and output projections, two Linears and the bare product
    assert products.sent == 5
    torch.testing.assert_close(redirected, plain, rtol=1e-5, atol=1e-5)


LAYOUTS = {
    "empty": lambda: (torch.randn(0, 8), torch.randn(8, 4)),
    "one row": lambda: (torch.randn(1, 8), torch.randn(8, 4)),
    "x transposed": lambda: (torch.randn(8, 5).t(), torch.randn(8, 4)),
    "x strided": lambda: (torch.randn(5, 16)[:, ::2], torch.randn(8, 4)),
    "weight transposed": lambda: (torch.randn(5, 8), torch.randn(4, 8).t()),
    "k = 1": lambda: (torch.randn(5, 1), torch.randn(1, 4)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_products_of_any_shape_and_layout_equal_torchs(layout):
    torch.manual_seed(0)
    x, w = LAYOUTS[layout]()
    bias = torch.randn(w.shape[1])
    with torch.no_grad():
        expected = x @ w, torch.addmm(bias, x, w)
        with onednn.Products() as products:
            got = torch.mm(x, w), torch.addmm(bias, x, w)
    assert products.sent == 2
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_products_leave_autograd_other_dtypes_and_scaled_sums_alone():
    a, b, bias = torch.randn(6, 8), torch.randn(8, 4), torch.randn(4)
    with onednn.Products() as products:
        with torch.no_grad():
            scaled = torch.addmm(bias, a, b, beta=0.5)
            wide = torch.addmm(torch.randn(6, 4), a, b)  # a 2-D bias: not a linear layer
            half = a.bfloat16() @ b.bfloat16()
        trained = a.requires_grad_() @ b
    assert products.sent == 0
    torch.testing.assert_close(scaled, 0.5 * bias + a.detach() @ b)
    assert wide.shape == (6, 4) and half.dtype == torch.bfloat16
    trained.sum().backward()
    assert a.grad is not None


def test_extraction_redirects_fp32_products_only_where_onednn_pays(monkeypatch):
    block, x = model(), torch.randn(2, 10, 32)
    seen = []
    real = onednn.Products.__torch_dispatch__

    def spy(self, func, types, args=(), kwargs=None):
        seen.append(func)
        return real(self, func, types, args, kwargs)

    monkeypatch.setattr(onednn.Products, "__torch_dispatch__", spy)
    for pays, precision, redirected in [
        (True, "fp32", True),
        (False, "fp32", False),
        (True, "bf16", False),
    ]:
        seen.clear()
        monkeypatch.setattr(runtime, "onednn_pays", lambda pays=pays: pays)
        with runtime.extracting(precision, "cpu"):
            assert not torch.backends.mha.get_fastpath_enabled()
            block(x)
        assert bool(seen) is redirected, (pays, precision)
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_speedup_is_zero_without_the_kernel(monkeypatch):
    monkeypatch.setattr(onednn, "kernel", lambda: None)
    runtime.onednn_speedup.cache_clear()
    try:
        assert runtime.onednn_speedup() == 0.0 and not runtime.onednn_pays()
    finally:
        runtime.onednn_speedup.cache_clear()
