"""Runtime policy, in one place: which device runs, with how many threads, at which
precision, how many loader workers feed it, one CPU training at a time, and which GPU a
pytest-xdist worker takes. torch is imported only where a decision needs it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from filelock import FileLock
from pydantic import Field

from harness.errors import EmbeddingError
from harness.settings import Count, environment

# Overrides what ``auto`` resolves to on this machine (a suite's explicit precision wins).
PRECISION_ENV = "SHELFBENCH_PRECISION"
# Runs the code paths written for a GPU (torch ranking, the torch L-BFGS probe, autocast in
# training) on whatever device there is, so that CI exercises them on the CPU.
TORCH_PATHS_ENV = "SHELFBENCH_TORCH_PATHS"
# The variables that set runtime policy, with their kinds and ranges.
ENVIRONMENT: dict[str, Any] = {
    "SHELFBENCH_THREADS": Count,
    "SHELFBENCH_WORKERS": Annotated[int, Field(ge=0)],
    PRECISION_ENV: Literal["fp32", "bf16", "tf32"],
    TORCH_PATHS_ENV: bool,
}


def setting(name: str) -> Any:
    """The variable ``name`` of ``ENVIRONMENT``, checked; None where unset."""
    return environment(name, ENVIRONMENT[name])


def check_environment() -> None:
    """Check every runtime variable before any cell runs: one line for a bad one."""
    for name in ENVIRONMENT:
        setting(name)


def cpu_threads() -> int:
    """``$SHELFBENCH_THREADS``, else the usable cores shared among pytest-xdist workers."""
    if (threads := setting("SHELFBENCH_THREADS")) is not None:
        return int(threads)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, len(os.sched_getaffinity(0)) // workers)


def training_threads() -> int:
    """Threads for training on the CPU: ``$SHELFBENCH_THREADS``, else every usable core,
    whatever the number of pytest-xdist workers. Training sums floats in an order that
    depends on the thread count, so a fixed count makes a serial run and an ``-n 2`` run
    learn the same model."""
    if (threads := setting("SHELFBENCH_THREADS")) is not None:
        return int(threads)
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def cpu_training() -> Iterator[None]:
    """Train with ``training_threads()`` torch threads, one training at a time on this
    machine (other processes wait instead of oversubscribing the cores, which slowed a
    fine-tune 15x); on CUDA, nothing to hold."""
    if device() == "cuda":
        yield
        return
    import torch

    before = torch.get_num_threads()
    with FileLock(Path(tempfile.gettempdir()) / "shelfbench-cpu-training.lock"):
        torch.set_num_threads(training_threads())
        try:
            yield
        finally:
            torch.set_num_threads(before)


@contextlib.contextmanager
def torch_computes() -> Iterator[None]:
    """numpy's BLAS on one thread for the block, where torch computes on the cores: its
    OpenBLAS threads spin after each call and take them from torch's (the default cell's
    linear probe: 37.6 s against 3.4 s; the MLP head search: 82.7 s against 76.2 s; 2
    cores, 2026-12-04, each pair measured one after the other)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def loader_workers() -> int:
    """DataLoader worker processes: ``$SHELFBENCH_WORKERS``; else, on CUDA, all cores but
    two (the GPU's feeding thread and the pin-memory thread: on one H200 with 16 cores, 14
    workers decoded 8,100-9,300 images/s at 224 px where 8 decoded 5,900-6,100); on the
    CPU half the cores (the model's threads get the rest), none with two cores or fewer."""
    if (workers := setting("SHELFBENCH_WORKERS")) is not None:
        return int(workers)
    cores = cpu_threads()
    if device() == "cuda":
        return max(0, cores - 2)
    return 0 if cores <= 2 else min(8, cores // 2)


def device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``; without an NVIDIA driver, no torch import."""
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_paths() -> bool:
    """Whether the code paths written for a GPU run: on CUDA, and on the CPU where
    ``$SHELFBENCH_TORCH_PATHS`` asks for them (CI runs them there, so that a bug on a path
    only a GPU takes fails on a machine without one)."""
    return device() == "cuda" or bool(setting(TORCH_PATHS_ENV))


BF16_GAIN = 1.5  # bf16 on a CPU whose bf16 matmul runs at least this many times fp32's


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 markedly faster than fp32, as measured here
    (``bf16_speedup``). Flags alone cannot tell: AVX-512 BF16 without AMX ran a 2048³ bf16
    matmul at 0.54x fp32's rate on a 2-vCPU Xeon (2026-11-30; ViT-B/16 embedded 4.5 against
    7.3 images/s) but at 4.2x on a 2-vCPU AMD EPYC (2026-12-05; EfficientNet-Lite0 embedded
    3.3x faster, ViT-Ti/16 2.2x, ResNet-18 2.0x); with AMX, ViT-B/16 embedded 2.7x faster;
    without any bf16 instructions (AVX2), bf16 autocast ran ~10x slower."""
    return bf16_speedup() >= BF16_GAIN


@functools.cache
def bf16_speedup() -> float:
    """How many times fp32's rate this CPU multiplies at in bf16 (``fastest`` of four
    512x1024x1024 matmuls each), once per process (about 50 ms); 0 without bf16
    instructions, where it is not worth timing."""
    if not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return 0.0
    import torch

    a, b = torch.randn(512, 1024), torch.randn(1024, 1024)
    a16, b16 = a.bfloat16(), b.bfloat16()
    best = fastest({"fp32": lambda: a @ b, "bf16": lambda: a16 @ b16})
    return round(best["fp32"] / best["bf16"], 2)


def fastest(runs: dict[str, Callable[[], object]], rounds: int = 4) -> dict[str, float]:
    """Each run's fastest time over ``rounds`` interleaved rounds (the first warms up), on
    one torch thread timed by that thread's CPU clock, so that other processes on the cores
    do not count. With three busy processes on a 2-vCPU AMD EPYC (2026-12-05) the wall
    clock put bf16's ratio anywhere from 2.2 to 17, this clock at 3.9-4.2; a ratio near a
    threshold could send one pytest-xdist worker to the other precision."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(rounds):
            for name, run in runs.items():
                start = time.thread_time()
                run()
                best[name] = min(best[name], time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return best


ONEDNN_GAIN = 1.2  # fp32 products through oneDNN where they run this many times faster


def onednn_pays() -> bool:
    """Whether fp32 products run at least ``ONEDNN_GAIN`` times faster through oneDNN's
    linear kernel than through torch's own BLAS here (``harness.onednn``)."""
    return onednn_speedup() >= ONEDNN_GAIN


@functools.cache
def onednn_speedup() -> float:
    """How many times the default fp32 product's rate oneDNN's linear kernel reaches here
    (``fastest`` of four 512x1024x1024 products each), once per process (about 60 ms); 0
    where torch has no such kernel."""
    import torch

    from harness.onednn import kernel

    linear = kernel()
    if linear is None:
        return 0.0
    x, w, b = torch.randn(512, 1024), torch.randn(1024, 1024), torch.randn(1024)
    best = fastest(
        {
            "default": lambda: torch.addmm(b, x, w.t()),
            "onednn": lambda: linear(x, w, b, "none", [], ""),
        }
    )
    return round(best["default"] / best["onednn"], 2)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; none where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(flags.partition(":")[2].split())


def resolve_precision(requested: str) -> str:
    """The precision a cell runs at on this machine: ``auto`` is ``$SHELFBENCH_PRECISION``
    where set, else bf16 on CUDA and on CPUs that multiply bf16 faster (``cpu_has_bf16``),
    fp32 elsewhere; ``tf32``
    (TensorFloat-32 matmuls) exists on CUDA only."""
    dev = device()
    if requested == "auto":
        requested = setting(PRECISION_ENV) or (
            "bf16" if dev == "cuda" or cpu_has_bf16() else "fp32"
        )
    if requested == "tf32" and dev != "cuda":
        raise EmbeddingError(
            "precision tf32 is a CUDA precision and this machine has no GPU; use fp32, bf16 "
            "or auto in the suite's [profile]"
        )
    return requested


def grad_off(precision: str) -> contextlib.AbstractContextManager[None]:
    """No autograd for extraction: ``torch.inference_mode()`` at fp32 and tf32, but
    ``torch.no_grad()`` under bf16 autocast, whose cache of bf16 weight copies torch
    (>= 2.10, pytorch#165068) skips under inference_mode: every batch then casts every
    weight again, and an open_clip ViT-B-32 embedded at 36 images/s against 120 under
    no_grad on an AMX Xeon (2026-11-30)."""
    import torch

    return torch.no_grad() if precision == "bf16" else torch.inference_mode()


@contextlib.contextmanager
def extracting(precision: str, dev: str) -> Iterator[None]:
    """How a forward pass for embeddings runs: without autograd (``grad_off``), at
    ``precision`` (``computing_at``); on the CPU also without torch's fused
    MultiheadAttention kernel, and at fp32 with the products through oneDNN where they run
    faster here (``onednn_pays``, ``harness.onednn``; under ``no_grad``, which lets them be
    seen). Unfused, an open_clip ViT-B-32 embedded 10% faster in bf16 (84 against 76
    images/s on a 2-vCPU AMD EPYC, avx512_bf16, no amx_bf16, 2026-12-05), and its
    attention's products can go to oneDNN."""
    import torch

    with contextlib.ExitStack() as stack:
        cpu = dev == "cpu"
        if cpu:
            fast = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            stack.callback(torch.backends.mha.set_fastpath_enabled, fast)
        redirect = cpu and precision == "fp32" and onednn_pays()
        stack.enter_context(torch.no_grad() if redirect else grad_off(precision))
        stack.enter_context(computing_at(precision, dev))
        if redirect:
            from harness.onednn import Products

            stack.enter_context(Products())
        yield


@contextlib.contextmanager
def computing_at(precision: str, dev: str) -> Iterator[None]:
    """bf16 autocast, TF32 matmuls and convolutions, or plain fp32, for the block."""
    import torch

    if precision == "bf16":
        with torch.autocast(dev, dtype=torch.bfloat16):
            yield
        return
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@contextlib.contextmanager
def cpu_matmuls(precision: str) -> Iterator[None]:
    """The block's fp32 matmuls on the CPU through oneDNN, allowed to compute in bf16
    where ``precision`` is bf16 (torch's ``mkldnn.matmul.fp32_precision = "bf16"``,
    oneDNN's fpmath mode), else in IEEE fp32. Inputs and results stay fp32. On a 2-vCPU
    AMD EPYC (avx512_bf16, no amx_bf16; 2026-12-05) a 16,384 × 768 × 9,691 product ran
    2.3x faster and kept fp32's order of error (largest 9.3e-7 of the largest result
    against 4.7e-7; float64 reference); other CPUs may round the operands to bf16, which a
    bf16 cell allows. The linear probe's chunk products (3,462 × 768 × 9,691, forward and
    gradient) ran at 204 and 210 GFLOP/s so, against 340 on bf16 tensors (whose results
    are rounded to bf16) and 125 and 177 by MKL's ``cblas_gemm_bf16bf16f32`` (bf16
    operands, fp32 results, exported by libtorch_cpu), on a 2-vCPU AMD EPYC with
    avx512_bf16 and no amx_bf16 (2026-12-06)."""
    import torch

    flags = torch.backends.mkldnn.matmul  # type: ignore[attr-defined]  # set at import
    before = flags.fp32_precision
    flags.fp32_precision = "bf16" if precision == "bf16" else "ieee"
    try:
        yield
    finally:
        flags.fp32_precision = before


def worker_gpu(worker: str, visible: str | None, count: int) -> str | None:
    """The GPU pytest-xdist worker ``gwI`` takes: the I-th (mod their number) of the GPUs
    ``CUDA_VISIBLE_DEVICES`` lists where it is set, else of the ``count`` the driver
    lists; None when there are none."""
    gpus = [str(i) for i in range(count)] if visible is None else visible.split(",")
    gpus = [gpu.strip() for gpu in gpus if gpu.strip()]
    return gpus[int(worker.removeprefix("gw")) % len(gpus)] if gpus else None


def pin_worker_gpu(worker: str) -> None:
    """Give pytest-xdist worker ``worker`` one GPU, before torch initialises CUDA, so that
    ``pytest -n N`` on N GPUs runs N cells at once, one per GPU."""
    if shutil.which("nvidia-smi") is None:
        return
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    count = sum(line.startswith("GPU ") for line in listed.splitlines())
    gpu = worker_gpu(worker, os.environ.get("CUDA_VISIBLE_DEVICES"), count)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def configure_worker(worker: str) -> None:
    """What an xdist worker sets before torch loads: its GPU, and passive OpenMP waiting
    (workers share the cores, and one worker's training uses all of them: a thread that
    spins while it waits steals them; a smoke run took 90 s with -n 2 against 39 s)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    pin_worker_gpu(worker)
