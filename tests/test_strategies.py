"""Strategies: the L-BFGS solver, the linear probe's protocol, and kNN on easy data."""

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import runtime
from harness.strategies import STRATEGIES, Features, lbfgs
from harness.strategies import linear as linear_probe
from harness.strategies import mlp as mlp_search
from harness.strategies.linear import (
    FTOL,
    fit_softmax,
    host,
    on_device,
    regularisation_path,
    softmax_objective,
    stratified_holdout,
)


@given(st.integers(0, 2**31), st.integers(1, 12))
def test_lbfgs_solves_a_convex_quadratic(seed, dim):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(dim, dim))
    a = m @ m.T + dim * np.eye(dim)
    b = rng.normal(size=dim)
    x = lbfgs.minimize(lambda v: (0.5 * v @ a @ v - b @ v, a @ v - b), np.zeros(dim), 200)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), atol=1e-5)


@given(st.integers(0, 2**31), st.floats(1, 3))
def test_a_scaled_search_ends_at_the_same_optimum(seed, spread):
    """``scale`` changes the variables L-BFGS searches over, not the minimum it finds,
    and ``gtol`` still tests the objective's own gradient."""
    rng = np.random.default_rng(seed)
    a = np.exp(rng.uniform(-2, 2, 12))
    b = rng.normal(size=12)
    scale = np.exp(rng.uniform(-1, 1, 12) * np.log(spread))

    def fun(v):
        return 0.5 * float(a @ (v * v)) - float(b @ v), a * v - b

    x = lbfgs.minimize(fun, np.zeros(12), 2000, gtol=1e-6, scale=scale)
    assert abs(a * x - b).max() < 1e-6
    np.testing.assert_allclose(x, b / a, atol=1e-5)


def test_scaling_a_quadratic_to_unit_curvature_solves_it_at_once():
    """The reason for ``scale``: curvatures from 1 to 1,000 take L-BFGS hundreds of
    evaluations; scaled by 1/sqrt(curvature), the first step lands on the minimum."""
    a = np.logspace(0, 3, 50)
    b = np.ones(50)
    counts = {}
    for name, scale in (("plain", 1.0), ("scaled", 1 / np.sqrt(a))):
        calls = []

        def fun(v, calls=calls):
            calls.append(1)
            return 0.5 * float(a @ (v * v)) - float(b @ v), a * v - b

        x = lbfgs.minimize(fun, np.zeros(50), 1000, gtol=1e-6, scale=scale)
        assert abs(a * x - b).max() < 1e-6
        counts[name] = len(calls)
    assert counts["scaled"] <= 5 and counts["plain"] > 10 * counts["scaled"], counts


def test_a_warm_search_sizes_its_first_step_by_the_last_searchs_curvature():
    """Started near the minimum of a like objective, a first step of unit length
    overshoots and the line search zooms back; ``Warm`` carries the last search's inverse
    curvature: its first iteration takes fewer evaluations, and so does the whole search
    to the same minimum. (At a gtol of 1e-8 the last iterations' count turns on rounding:
    warm 82 against cold 77 with OpenBLAS's SkylakeX dot kernel, 81 against 85 with
    Haswell's; at 1e-6 it is 45 against 48 with each of nine kernels, 2026-12-06.)"""
    a, b = np.logspace(0, 2, 30), np.ones(30)

    def quadratic(v, shift=0.0):
        return 0.5 * float(a @ (v * v)) - float((b + shift) @ v), a * v - b - shift

    warm = lbfgs.Warm()
    start = lbfgs.minimize(quadratic, np.zeros(30), 500, gtol=1e-8, warm=warm)
    assert warm.gamma is not None
    counts = {}
    for name, gamma in (("cold", None), ("warm", warm.gamma)):
        for iterations in (1, 500):
            calls = []

            def fun(v, calls=calls):
                calls.append(1)
                return quadratic(v, shift=1e-3)

            carried = lbfgs.Warm(gamma)  # each search its own: a search updates it
            x = lbfgs.minimize(fun, start, iterations, gtol=1e-6, scale=2.0, warm=carried)
            counts[name, iterations] = len(calls)
        # a gradient a (x - x*) within 1e-6, for a >= 1 and x* = 1.001 / a
        np.testing.assert_allclose(x, (b + 1e-3) / a, rtol=1e-6)
    assert counts["warm", 1] < counts["cold", 1], counts
    assert counts["warm", 500] < counts["cold", 500], counts


@given(st.floats(0.05, 20), st.floats(0.1, 3), st.floats(1e-3, 1e3))
def test_the_line_search_meets_the_strong_wolfe_conditions(curve, centre, scale):
    """Along a quartic valley whose minimum lies anywhere from 1e-3 to 1e3 of the first
    step: sufficient decrease and a flattened slope at the step it returns."""

    def fun(v):
        t = v[0] / scale - centre
        return curve * t**2 + t**4, np.array([(2 * curve * t + 4 * t**3) / scale])

    x = np.array([0.0])
    f, g = fun(x)
    direction = -g / abs(g)
    step, value, slope, _ = lbfgs.wolfe(fun, x, f, g, direction)
    slope0 = float(g @ direction)
    assert value <= f + 1e-4 * step * slope0 and abs(slope) <= 0.9 * abs(slope0)


def test_ftol_ends_a_fit_that_float32_rounding_has_stalled():
    """A quadratic over 2,000 coordinates, its value summed from float32 terms and its
    gradient rounded to float32, so a gradient tolerance of 1e-9 cannot be reached: the
    relative-decrease stop ends it sooner, still within 1e-7 of the optimum."""
    rng = np.random.default_rng(0)
    a, b = rng.permutation(np.logspace(0, 3, 2000)), rng.normal(size=2000)
    optimum = -0.5 * float((b * b / a).sum())

    def exact(v):
        return 0.5 * float((a * v * v).sum()) - float(b @ v)

    calls = {0.0: 0, FTOL: 0}

    def rounded(v, ftol):
        calls[ftol] += 1
        terms = (0.5 * a * v * v - b * v).astype(np.float32)
        return float(terms.sum(dtype=np.float64)), (a * v - b).astype(np.float32).astype(float)

    found = {}
    for ftol in calls:
        fun = functools.partial(rounded, ftol=ftol)
        x = lbfgs.minimize(fun, np.zeros(2000), 1000, 10, 1e-9, ftol)
        found[ftol] = calls[ftol], (exact(x) - optimum) / abs(optimum)
    assert found[FTOL][0] < found[0.0][0], found
    assert found[FTOL][1] < 1e-7, found


def test_lbfgs_takes_no_more_passes_than_scipys_l_bfgs_b_on_a_regularisation_path():
    """The oracle for the effort: scipy's L-BFGS-B (Moré-Thuente line search) on the same
    objective, warm starts and tolerances. On a 969-class lookalike of Products-10K an
    Armijo-only search took 460 passes to its 160 (2026-12-05); on this small path both
    took about its number."""
    from scipy.optimize import minimize

    x, y = overlapping(0, n=2000, dim=32, classes=20)
    fx, fy = on_device(x / np.linalg.norm(x, axis=1, keepdims=True), y)
    size = 32 * 20 + 20
    gtol = 1e-3 * float(abs(softmax_objective(fx, fy, 20, 0.0)(np.zeros(size))[1]).max())
    ours, theirs, theta, init = [], [], np.zeros(size), None
    for c in (0.1, 1.0, 10.0, 100.0, 1000.0):
        objective = softmax_objective(fx, fy, 20, 1 / (c * 2000))
        options = {"maxcor": 10, "gtol": gtol, "maxiter": 1000}  # and its default ftol
        found = minimize(objective, theta, jac=True, method="L-BFGS-B", options=options)
        theta, theirs = found.x, [*theirs, found.nfev]
        init = fit_softmax(fx, fy, 20, 1 / (c * 2000), 1000, init, gtol, ours)
    assert sum(ours) <= 1.2 * sum(theirs), (ours, theirs)


# 21 logits at a time: chunks of 7, 7 and 6 rows, through one buffer
@pytest.mark.parametrize("chunk_logits", [linear_probe.CHUNK_LOGITS, 21])
def test_softmax_gradient_matches_finite_differences(monkeypatch, chunk_logits):
    monkeypatch.setattr(linear_probe, "CHUNK_LOGITS", chunk_logits)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    objective = softmax_objective(*on_device(x, y), 3, weight_decay=0.1)
    theta = rng.normal(size=4 * 3 + 3)
    _, grad = objective(theta)
    eps = 1e-3
    numeric = [
        (objective(theta + eps * e)[0] - objective(theta - eps * e)[0]) / (2 * eps)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(grad, numeric, atol=1e-3)


def test_fit_softmax_reaches_the_scipy_optimum():
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    x, y = on_device(rng.normal(size=(200, 6)).astype(np.float32), rng.integers(0, 4, 200))
    objective = softmax_objective(x, y, 4, weight_decay=0.05)
    w, b = host(fit_softmax(x, y, 4, 0.05, max_iter=300))
    ours = objective(np.concatenate([w.ravel(), b]))[0]
    reference = minimize(objective, np.zeros(28), jac=True, method="L-BFGS-B").fun
    assert ours == pytest.approx(reference, abs=1e-5)


def test_holdout_takes_the_fraction_of_every_class():
    labels = np.repeat([0, 1, 2], [10, 20, 1])
    held = stratified_holdout(labels, 0.2, seed=0)
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 4, 0]
    np.testing.assert_array_equal(held, stratified_holdout(labels, 0.2, seed=0))


def blobs(seed=0, n=60, dim=8, classes=3):
    """Well-separated Gaussian classes; the centres are fixed, the noise is seeded."""
    centres = np.random.default_rng(100).normal(size=(classes, dim)) * 5
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_knn_and_linear_are_perfect_on_separated_blobs():
    train, train_labels = blobs(0)
    test, test_labels = blobs(1)
    data = Features(train, train_labels, test, test_labels, 3)
    knn = STRATEGIES.get("knn")
    result = knn.run(data, knn.params({})).metrics
    assert result["accuracy"] == result["recall@1"] == result["map@r"] == 1.0
    linear = STRATEGIES.get("linear")
    assert linear.run(data, linear.params({})).metrics["accuracy"] == 1.0


def test_linear_chooses_its_c_without_looking_at_test():
    train, train_labels = blobs(2, dim=30)
    test, test_labels = blobs(3, dim=30)
    linear = STRATEGIES.get("linear")
    params = linear.params({"C": (0.01, 1.0, 100.0)})
    chosen = [
        linear.run(Features(train, train_labels, test, labels, 3), params).chosen
        for labels in (test_labels, np.roll(test_labels, 1))
    ]
    assert chosen[0] == chosen[1]


def test_zeroshot_picks_the_class_whose_prompts_embed_nearest():
    """With a text encoder that maps each class's prompts to that class's image centroid,
    zero-shot is nearest-centroid classification: on separated blobs, perfect."""
    from harness.strategies.zeroshot import TEMPLATES

    train, train_labels = blobs(0)
    test, test_labels = blobs(1)
    names = ("shirt", "shoe", "bag")
    centroids = np.stack([train[train_labels == c].mean(0) for c in range(3)])
    seen: list[str] = []

    def encode_text(prompts):
        seen.extend(prompts)
        return np.stack(
            [centroids[next(i for i, n in enumerate(names) if n in p)] for p in prompts]
        )

    zeroshot = STRATEGIES.get("zeroshot")
    data = Features(train, train_labels, test, test_labels, 3, names, encode_text)
    outcome = zeroshot.run(data, zeroshot.params({}))
    assert outcome.metrics["accuracy"] == 1.0
    assert seen[: len(TEMPLATES)] == [t.format("shirt") for t in TEMPLATES]
    assert outcome.chosen == {"prompts": 3 * len(TEMPLATES)}


def test_mlp_searches_logs_every_trial_and_retrieves_with_its_penultimate_layer():
    train, train_labels = blobs(0)
    test, test_labels = blobs(1)
    mlp = STRATEGIES.get("mlp")
    params = mlp.params({"trials": 3, "search_epochs": 5, "max_epochs": 20, "width": (32,)})
    outcome = mlp.run(Features(train, train_labels, test, test_labels, 3), params)
    assert outcome.metrics["accuracy"] == 1.0 and outcome.metrics["recall@1"] == 1.0
    trials = outcome.chosen["trials"]
    assert len(trials) == 3 and all(1 <= t["epochs"] <= 20 for t in trials)
    assert outcome.chosen["validation_accuracy"] == max(t["validation_accuracy"] for t in trials)
    assert outcome.chosen["rungs"] == [2, 5]  # 3 trials, then the best one
    assert sum(t["epochs"] <= 2 for t in trials) == 2  # the other two stopped at the rung
    assert outcome.chosen["retrieval_embedding"] == "penultimate layer of the MLP head"
    assert outcome.trainable_params > 0 and outcome.train_gflops > 0


def test_the_mlp_search_counts_its_trial_epochs_on_a_bar(monkeypatch):
    """A long search (thousands of classes) counts trial-epochs on a progress bar, the
    training on past the search's end included."""
    import io

    from tqdm import tqdm

    shown = io.StringIO()
    bars: list[tqdm] = []

    def bar(trials: int, epochs: int) -> tqdm:
        bars.append(tqdm(desc=f"mlp, {trials} trials", total=epochs, file=shown, mininterval=0))
        return bars[-1]

    monkeypatch.setattr(mlp_search, "epochs_bar", bar)
    train, train_labels = blobs(0)
    test, test_labels = blobs(1)
    mlp = STRATEGIES.get("mlp")
    params = mlp.params({"trials": 3, "search_epochs": 2, "max_epochs": 6, "width": (32,)})
    params = {**params, "patience": 100}  # the best trains on to max_epochs
    chosen = mlp.run(Features(train, train_labels, test, test_labels, 3), params).chosen
    epochs = sum(t["epochs"] for t in chosen["trials"])
    assert chosen["epochs"] == 6 and bars[0].n == bars[0].total == epochs == 3 * 1 + 6 - 1
    assert "mlp, 3 trials" in shown.getvalue() and "training on the best" in shown.getvalue()
    shape = f"{chosen['depth']} × {chosen['width']}"
    assert f"{shape}, best {chosen['validation_accuracy']:.4f}" in shown.getvalue()


def test_mlp_never_looks_at_test_labels():
    train, train_labels = blobs(2, dim=30)
    test, test_labels = blobs(3, dim=30)
    mlp = STRATEGIES.get("mlp")
    params = mlp.params({"trials": 2, "search_epochs": 3, "max_epochs": 5, "width": (16,)})
    chosen = [
        mlp.run(Features(train, train_labels, test, labels, 3), params).chosen
        for labels in (test_labels, np.roll(test_labels, 1))
    ]
    assert chosen[0] == chosen[1]


def test_halving_rungs_are_hyperbands_and_bound_the_epochs():
    assert mlp_search.rungs(6, 3, 30) == [4, 10, 30]  # 6 trials, then 2, then 1
    assert mlp_search.trial_epochs(6, 3, 30) == 6 * 4 + 2 * 6 + 1 * 20
    assert mlp_search.rungs(6, 1, 30) == [30] and mlp_search.trial_epochs(6, 1, 30) == 180
    assert mlp_search.rungs(1, 3, 30) == [30]


def mlp_trials(n, params, precision="fp32"):
    import torch

    train, labels = overlapping(0, dim=24)
    x, y = torch.from_numpy(train), torch.from_numpy(labels)
    held = torch.from_numpy(stratified_holdout(labels, params["validation"], params["seed"]))
    split = (x[~held], y[~held], x[held], y[held])
    rng = np.random.default_rng(params["seed"])
    return [
        mlp_search.Trial(mlp_search.sample(rng, params), split, 5, params, precision)
        for _ in range(n)
    ]


def test_a_trial_trained_in_pieces_between_others_learns_what_one_stretch_does():
    params = STRATEGIES.get("mlp").params({"width": (16,), "patience": 100})
    straight, _ = mlp_trials(2, params)
    straight.train(6)
    pieces, other = mlp_trials(2, params)
    pieces.train(2)
    other.train(3)  # draws dropout masks and batches between the pieces
    pieces.train(6)
    assert pieces.epochs == straight.epochs == 6 and pieces.best == straight.best
    for name, value in straight.head.state_dict().items():
        assert (pieces.head.state_dict()[name] == value).all(), name


def test_halving_trains_only_the_best_third_past_each_rung():
    params = STRATEGIES.get("mlp").params({"width": (16,), "search_epochs": 9, "patience": 100})
    trials = mlp_trials(6, params)
    best = mlp_search.search(trials, 3, 9)  # rungs 1, 3, 9
    assert sorted(t.epochs for t in trials) == [1, 1, 1, 1, 3, 9]
    assert best.epochs == 9 and best.best == max(t.best for t in trials)
    everyone = mlp_trials(6, params)
    mlp_search.search(everyone, 1, 9)
    assert [t.epochs for t in everyone] == [9] * 6


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_the_heads_dropout_has_torchs_distribution(dtype, p):
    """Zero with probability p, the rest scaled by 1/(1 - p), in training only, in the
    dtypes a head trains in; gradients pass through the kept entries; masks of an odd
    size, and each of the four int16 lanes of a draw, keep their share."""
    import torch

    from harness.dropout import Dropout

    layer = Dropout(p)
    x = torch.ones(999, 1001, dtype=getattr(torch, dtype), requires_grad=True)
    out = layer(x)
    kept = out != 0
    assert set(out.unique().tolist()) == {0.0, float(x.new_tensor(1 / (1 - p)))}
    for lane in [kept.flatten()[i::4] for i in range(4)]:  # σ ≤ 0.001
        assert float(lane.float().mean()) == pytest.approx(1 - p, abs=0.005)
    out.float().sum().backward()
    assert torch.equal(x.grad, kept * x.new_tensor(1 / (1 - p)))
    assert layer.eval()(x) is x and Dropout(0.0)(x) is x


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_heads_train_in_bf16_only_where_the_cell_and_the_cpu_run_it(monkeypatch, fast, name):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: fast)
    train, train_labels = blobs(0)
    test, test_labels = blobs(1)
    strategy = STRATEGIES.get(name)
    small = {"trials": 3, "search_epochs": 5, "max_epochs": 20, "width": (32,)}
    params = strategy.params(small if name == "mlp" else {})
    for precision in ("fp32", "bf16"):
        data = Features(train, train_labels, test, test_labels, 3, precision=precision)
        outcome = strategy.run(data, params)
        want = "bf16" if fast and precision == "bf16" else "fp32"
        assert outcome.chosen["precision"] == want and outcome.metrics["accuracy"] == 1.0


def test_cpu_matmuls_at_bf16_keep_fp32_results_and_restore_the_flag():
    """oneDNN's bf16 arithmetic for fp32 matmuls: fp32 in and out, errors no larger than
    rounding the operands to bf16 makes (a 2-vCPU AMD EPYC kept fp32's order, 1e-6), the
    flag as before."""
    import torch

    a, b = torch.randn(256, 512, dtype=torch.float64), torch.randn(512, 384, dtype=torch.float64)
    exact = a @ b
    before = torch.backends.mkldnn.matmul.fp32_precision
    with runtime.cpu_matmuls("bf16"):
        product = a.float() @ b.float()
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    assert product.dtype == torch.float32
    assert float((product - exact).abs().max() / exact.abs().max()) < 2**-7


def overlapping(seed, n=400, dim=16, classes=5):
    """Gaussian classes that overlap: no probe is perfect, so regularisation matters."""
    centres = np.random.default_rng(7).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    return (centres[labels] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_linear_probe_is_scikit_learns_logistic_regression():
    """The oracle: scikit-learn on the same L2-normalised features, C chosen on the same
    validation split, refit on all of train; same C, same test predictions."""
    from sklearn.linear_model import LogisticRegression

    train, train_labels = overlapping(0)
    test, test_labels = overlapping(1)
    linear = STRATEGIES.get("linear")
    params = linear.params({})
    outcome = linear.run(Features(train, train_labels, test, test_labels, 5), params)

    def normalised(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x, x_test = normalised(train.astype(np.float64)), normalised(test.astype(np.float64))
    held = stratified_holdout(train_labels, params["validation"], params["seed"])
    scores = {}
    for c in params["C"]:
        model = LogisticRegression(C=c, max_iter=5000, tol=1e-8)
        scores[c] = model.fit(x[~held], train_labels[~held]).score(x[held], train_labels[held])
    best = max(scores, key=lambda c: (scores[c], -c))
    reference = LogisticRegression(C=best, max_iter=5000, tol=1e-8).fit(x, train_labels)
    assert outcome.chosen["C"] == best
    agree = np.mean(reference.predict(x_test) == outcome.items["predicted"])
    assert agree >= 0.99
    assert outcome.metrics["accuracy"] == pytest.approx(
        reference.score(x_test, test_labels), abs=0.01
    )


def test_the_c_path_stops_after_patience_cs_no_better_on_validation():
    """Walking C upwards, the path ends at the ``patience``-th C in a row that scores no
    better than the best before it; what it walked is the full path's beginning."""
    x, y = overlapping(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    held = stratified_holdout(y, 0.2, seed=0)
    params = STRATEGIES.get("linear").params({"C": (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)})
    full = regularisation_path(x, y, held, 5, {**params, "patience": 6})[1]
    for patience in (1, 2):
        walked = regularisation_path(x, y, held, 5, {**params, "patience": patience})[1]
        best, stale, expected = -1.0, 0, {}
        for c, accuracy in full.items():
            expected[c] = accuracy
            stale, best = (stale + 1, best) if accuracy <= best else (0, accuracy)
            if stale == patience:
                break
        assert walked == pytest.approx(expected)
        assert len(walked) < len(full), full


def test_the_objective_gives_the_same_with_theta_as_numpy_or_as_a_tensor():
    """θ as a tensor on the features' device (the GPU's path) or as numpy (the CPU's)."""
    import torch

    rng = np.random.default_rng(0)
    x, y = on_device(rng.normal(size=(50, 6)).astype(np.float32), rng.integers(0, 4, 50))
    theta = rng.normal(size=6 * 4 + 4)
    value, grad = softmax_objective(x, y, 4, 0.1)(theta)
    tensor_value, tensor_grad = softmax_objective(x, y, 4, 0.1)(torch.from_numpy(theta))
    assert isinstance(grad, np.ndarray) and isinstance(tensor_grad, torch.Tensor)
    assert tensor_value == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(tensor_grad.numpy(), grad, atol=1e-12)


def test_the_probe_with_its_state_on_the_device_takes_the_host_paths_steps(monkeypatch):
    """L-BFGS with its state in torch tensors (as on a GPU, or under the GPU's paths on
    the CPU) ends where the CPU's numpy state does."""
    import torch

    rng = np.random.default_rng(2)
    x, y = on_device(rng.normal(size=(120, 5)).astype(np.float32), rng.integers(0, 3, 120))
    monkeypatch.delenv("SHELFBENCH_TORCH_PATHS", raising=False)
    w, b = fit_softmax(x, y, 3, 0.01, max_iter=200)
    monkeypatch.setenv("SHELFBENCH_TORCH_PATHS", "1")
    fitted = fit_softmax(x, y, 3, 0.01, max_iter=200)
    assert isinstance(w, np.ndarray) and isinstance(fitted[0], torch.Tensor)
    tw, tb = host(fitted)
    np.testing.assert_allclose(tw, w, atol=1e-6)
    np.testing.assert_allclose(tb, b, atol=1e-6)


def test_a_loose_c_path_ends_with_the_model_a_tight_one_does_in_fewer_passes():
    """The path's fits stop at ``PATH_FTOL``, the refit at ``FTOL``: the same C and the
    same probe (to the refit's own tolerance) as with every fit at ``FTOL``."""
    from harness.strategies import linear as module

    x, y = overlapping(0, n=3000, dim=32, classes=60)
    params = module.LinearSettings().model_dump()
    loose = module.probe(x, y, 60, params)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "PATH_FTOL", module.FTOL)
        tight = module.probe(x, y, 60, params)
    assert loose.chosen["C"] == tight.chosen["C"]
    assert loose.gflops < 0.9 * tight.gflops, (loose.gflops, tight.gflops)
    scores = [x @ p.weight + p.bias for p in (loose, tight)]
    np.testing.assert_array_equal(scores[0].argmax(1), scores[1].argmax(1))
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-3 * abs(scores[1]).max())


def test_balance_is_one_over_the_root_of_the_top_curvature():
    """The weights' scale against the bias, 1 / sqrt(σ + λK), with σ the features' second
    moment's largest eigenvalue (numpy's the oracle): near 1 where the features share a
    direction, near sqrt(d) where they spread evenly and λK is small."""
    import torch

    from harness.strategies.linear import balance

    rng = np.random.default_rng(0)
    for shift in (3.0, 0.0):
        x = rng.normal(size=(20_000, 64)) + shift
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        sigma = np.linalg.eigvalsh(x.T @ x / len(x))[-1]
        features = torch.from_numpy(x.astype(np.float32))
        for decay, classes in ((0.0, 10), (1e-3, 1000)):
            expected = 1 / np.sqrt(sigma + decay * classes)
            # power iteration from below, on a sample: within 1% where σ stands out;
            # spread evenly, a 2,048-row sample's largest eigenvalue sits above the whole's
            tolerance = 0.01 if shift else 0.25
            assert balance(features, classes, decay) == pytest.approx(expected, rel=tolerance)
    assert balance(features, 10, 0.0) > 5


def test_balancing_the_weights_against_the_bias_saves_passes_not_accuracy(monkeypatch):
    """On a many-class problem with evenly spread features, the balanced search reaches
    the same probe in fewer passes than the unbalanced one (scale 1)."""
    from harness.strategies import linear as module

    rng = np.random.default_rng(0)
    labels = np.arange(4000) % 100
    x = (0.5 * rng.normal(size=(100, 64))[labels] + rng.normal(size=(4000, 64))).astype(np.float32)
    y = labels
    params = module.LinearSettings().model_dump()
    balanced = module.probe(x, y, 100, params)
    monkeypatch.setattr(module, "balance", lambda *args: 1.0)
    plain = module.probe(x, y, 100, params)
    assert balanced.chosen["C"] == plain.chosen["C"]
    assert balanced.gflops < 0.75 * plain.gflops, (balanced.gflops, plain.gflops)
    scores = [x @ p.weight + p.bias for p in (balanced, plain)]
    assert (scores[0].argmax(1) == scores[1].argmax(1)).mean() > 0.99


def test_a_fit_that_starts_where_the_last_ended_makes_no_pass_to_start():
    """The C path keeps one ``CrossEntropy``: the next C's fit starts where the last fit
    ended, and that point's cross-entropy is remembered, not recomputed."""
    from harness.strategies.linear import CrossEntropy

    rng = np.random.default_rng(3)
    x, y = on_device(rng.normal(size=(300, 6)).astype(np.float32), rng.integers(0, 3, 300))
    data = CrossEntropy(x, y, 3)
    first = fit_softmax(x, y, 3, 0.1, 200, data=data)
    fresh, shared = [], []
    alone = fit_softmax(x, y, 3, 0.01, 200, first, passes=fresh)
    along = fit_softmax(x, y, 3, 0.01, 200, first, passes=shared, data=data)
    assert shared[0] == fresh[0] - 1, (shared, fresh)
    for mine, theirs in zip(along, alone, strict=True):
        np.testing.assert_array_equal(mine, theirs)
