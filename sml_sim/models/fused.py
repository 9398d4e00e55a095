"""The transfer's conv layers as one compiled CPU kernel (``fused_conv.cpp``), with its loader.

Run as separate ATen calls, the two conv layers and their GELUs take about a third of a training
step on the CPU for 2.5% of its multiply-adds: each layer writes and re-reads a [C, rows * d] map.
The kernel does a row at a time in cache (see the C++ file). It computes the same function as the
ATen path (tests/test_fused.py checks values and gradients); float32 results differ in rounding.

It is built with torch's C++ extension tools on first use (about half a minute, once per machine
and torch version, cached under ``SML_SIM_KERNEL_DIR`` or torch's extension directory). Without a
C++ compiler, or with ``SML_SIM_FUSED=0``, SML uses the ATen path; ``status()`` says which.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
from pathlib import Path

import torch

__all__ = ["fused_conv", "gelu", "kernel", "prepare", "status", "fallback_note", "enabled_by_env", "usable_for"]

_SOURCE = Path(__file__).with_name("fused_conv.cpp")
_lock = threading.Lock()
_module = None
_failure: str | None = None


def enabled_by_env() -> bool:
    return os.environ.get("SML_SIM_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_tag() -> str:
    """Part of the build's name: the kernel is compiled with -march=native, so a cache shared
    between machines must not hand one CPU's build to another."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def _build():
    from torch.utils import cpp_extension

    # torch drives the compiler with ninja; the pip package puts it next to this Python, which is
    # not on PATH when .venv/bin/python is run directly.
    if shutil.which("ninja") is None:
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    # Link against the OpenMP runtime torch already loaded, so that the kernel's threads are
    # torch's threads: a second runtime's idle threads would spin against them on few cores.
    openmp = _loaded_openmp()
    source = _SOURCE.read_text()
    identity = f"{source}{torch.__version__}{Path(openmp).name if openmp else ''}"
    name = f"sml_sim_fused_{hashlib.sha1(identity.encode()).hexdigest()[:10]}_{_cpu_tag()}"
    build_dir = os.environ.get("SML_SIM_KERNEL_DIR")
    if build_dir:
        Path(build_dir, name).mkdir(parents=True, exist_ok=True)
        build_dir = str(Path(build_dir, name))
    return cpp_extension.load(
        name=name, sources=[str(_SOURCE)], build_directory=build_dir,
        extra_cflags=["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
        extra_ldflags=[openmp] if openmp else ["-fopenmp"], verbose=False)


def _loaded_openmp() -> str | None:
    """The GNU OpenMP library this process has loaded (torch's), if it can be seen."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split()[-1] if line.split() else ""
        if Path(path).name.startswith("libgomp") and ".so" in path and Path(path).exists():
            return path
    return None


def kernel():
    """The compiled module, building it on first call; None when disabled or not buildable."""
    global _module, _failure
    if not enabled_by_env():
        return None
    if _module is not None or _failure is not None:
        return _module
    with _lock:
        if _module is None and _failure is None:
            try:
                _module = _build()
            except Exception as exc:  # no compiler, no headers, a failed build: fall back to ATen
                _failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return _module


def prepare(report=None):
    """Build or load the kernel now, not in the middle of a training step; ``report(fraction)`` is
    called before (0.0) and after (1.0) when this process has not tried yet, so that a UI can say
    what the first half-minute is for. Returns the module or None."""
    if not enabled_by_env() or _module is not None or _failure is not None:
        return _module
    if report is not None:
        report(0.0)
    module = kernel()
    if report is not None:
        report(1.0)
    return module


def status() -> str:
    """One line: which path SML's conv layers take on the CPU, and why."""
    if not enabled_by_env():
        return "ATen ops (SML_SIM_FUSED=0)"
    if kernel() is not None:
        return "fused C++ kernel"
    return f"ATen ops (the fused kernel did not build: {_failure})"


def fallback_note() -> str | None:
    """A line for the user when the kernel was wanted but did not build; None otherwise."""
    if not enabled_by_env() or _failure is None:
        return None
    return (f"SML's transfer runs on plain ATen ops on the CPU (1.2-1.4x slower): its fused kernel did "
            f"not build ({_failure}). It needs a C++ compiler (g++ or clang) and ninja; "
            f"SML_SIM_FUSED=0 skips the attempt.")


class _FusedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h0, *weights):
        ctx.save_for_backward(h0, *weights)
        return _module.conv_forward(h0, list(weights))

    @staticmethod
    def backward(ctx, grad_out):
        h0, *weights = ctx.saved_tensors
        need_input = ctx.needs_input_grad[0]
        need_weights = any(ctx.needs_input_grad[1:])
        grads = _module.conv_backward(h0, weights, grad_out.contiguous(), need_input, need_weights)
        grad_h0 = grads[0] if need_input else None
        grad_w = [g if (need_weights and ctx.needs_input_grad[1 + i]) else None
                  for i, g in enumerate(grads[1:])]
        return (grad_h0, *grad_w)


class _GeluSlope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, slope = _module.gelu_slope(x)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (slope,) = ctx.saved_tensors
        return grad_out * slope


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU that keeps its derivative for backward (the kernel's); F.gelu without gradients."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.nn.functional.gelu(x)
    return _GeluSlope.apply(x.contiguous())


MAX_DIM = 1024  # the kernel keeps a row's pre-activations on the stack (kMaxDim in the C++)


def usable_for(h0: torch.Tensor) -> bool:
    """Whether the kernel takes this stacked [3, rows, d] input (else the ATen ops do)."""
    return (h0.device.type == "cpu" and h0.dtype in (torch.float32, torch.float64)
            and h0.dim() == 3 and h0.shape[2] <= MAX_DIM and kernel() is not None)


def fused_conv(h0: torch.Tensor, weights) -> torch.Tensor:
    """GELU conv layers on a stacked [3, rows, d] input -> [rows, C_last * d] (channel-major)."""
    return _FusedConv.apply(h0.contiguous(), *[w.contiguous() for w in weights])
