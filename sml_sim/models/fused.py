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
import logging
import os
import platform
import re
import shutil
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

__all__ = ["fused_conv", "gelu", "kernel", "prepare", "status", "fallback_note", "enabled_by_env", "usable_for"]

_SOURCE = Path(__file__).with_name("fused_conv.cpp")
_lock = threading.Lock()
_module = None
_failure: str | None = None
last_build_seconds: float | None = None  # the compile this process did, if any


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


def _target() -> tuple[str, Path, str | None]:
    """The build's name, its folder and the OpenMP library to link against."""
    from torch.utils import cpp_extension

    # Link against the OpenMP runtime torch already loaded, so that the kernel's threads are
    # torch's threads: a second runtime's idle threads would spin against them on few cores.
    openmp = _loaded_openmp()
    identity = f"{_SOURCE.read_text()}{torch.__version__}{sys.version_info[:2]}{Path(openmp).name if openmp else ''}"
    name = f"sml_sim_fused_{hashlib.sha1(identity.encode()).hexdigest()[:10]}_{_cpu_tag()}"
    root = (os.environ.get("SML_SIM_KERNEL_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
            or str(Path(cpp_extension.get_default_build_root(), "sml_sim")))
    return name, Path(root, name), openmp


def needs_build() -> bool:
    """Whether the next kernel() compiles (about half a minute) rather than loads a cached build."""
    if not enabled_by_env() or _module is not None or _failure is not None:
        return False
    try:
        name, build_dir, _ = _target()
    except Exception:  # noqa: BLE001 - the build itself will say what is wrong
        return True
    return not (build_dir / f"{name}.so").exists()


def _build():
    from torch.utils import cpp_extension

    # torch drives the compiler with ninja; the pip package puts it next to this Python, which is
    # not on PATH when .venv/bin/python is run directly.
    if shutil.which("ninja") is None:
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    name, build_dir, openmp = _target()
    build_dir.mkdir(parents=True, exist_ok=True)
    # torch logs a screenful about a compiler it cannot identify (straight onto a TUI's screen); the
    # failure, if any, is reported once, by fallback_note().
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with build_lock(build_dir), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cpp_extension.load(
                name=name, sources=[str(_SOURCE)], build_directory=str(build_dir),
                extra_cflags=["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
                extra_ldflags=[openmp] if openmp else ["-fopenmp"], verbose=False)
    finally:
        torch_log.setLevel(level)


BUILD_LOCK = "sml_sim.lock"  # ours, beside torch's "lock": created exclusively, holds "pid@host"
STALE_LOCK_SECONDS = 600  # another machine's lock this old is left over (a build takes ~30 s)
MAX_WAIT_SECONDS = 900  # then give up waiting (a reused pid can look alive) and use the torch ops


@contextmanager
def build_lock(build_dir: Path):
    """Build or load in ``build_dir`` alone. torch's own lock file records no owner, so a build
    killed outright (a signal, the OOM killer) left it behind and every later run waited on it
    forever; this lock names its holder, is taken over once the holder is gone, and, held, makes
    any torch lock in the folder a leftover."""
    ours = build_dir / BUILD_LOCK
    started = time.monotonic()
    while True:
        try:
            fd = os.open(ours, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if holder_gone(ours):
                ours.unlink(missing_ok=True)
            elif time.monotonic() - started > MAX_WAIT_SECONDS:
                raise RuntimeError(f"another process has been building in {build_dir} for "
                                   f"{MAX_WAIT_SECONDS // 60} minutes") from None
            else:
                time.sleep(0.5)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}@{socket.gethostname()}")
        break
    try:
        (build_dir / "lock").unlink(missing_ok=True)
        yield
    finally:
        ours.unlink(missing_ok=True)


def holder_gone(lock: Path) -> bool:
    """Whether the process named in ``lock`` is gone: by its pid on this machine, by the lock's age
    for another machine's (or for a lock left empty)."""
    try:
        text = lock.read_text().strip()
        age = time.time() - lock.stat().st_mtime
    except OSError:  # released meanwhile
        return False
    try:
        pid, host = text.split("@", 1)
        pid_number = int(pid)
    except ValueError:  # not written yet (a holder writes it right after creating the file), or garbage
        return age > 10
    if host == socket.gethostname():
        return not _alive(pid_number)
    return age > STALE_LOCK_SECONDS


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _reason(exc: Exception) -> str:
    """One line on why a build failed: the compiler's first error, not ninja's closing line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if re.search(r"error|not found|no such file|cannot|permission denied", line, re.IGNORECASE) \
                and not line.startswith(("Error building extension", "ninja: build stopped")):
            return line[:300]
    return f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"


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
                _failure = _reason(exc)
    return _module


def prepare(report=None):
    """Build or load the kernel now, not in the middle of a training step. When that means a
    compile, ``report(fraction)`` is called before (0.0) and after (1.0), so that a UI can say what
    the half-minute is for (``last_build_seconds`` then says how long it took). Returns the module
    or None."""
    global last_build_seconds
    if not needs_build():
        return kernel()
    if report is not None:
        report(0.0)
    started = time.perf_counter()
    module = kernel()
    last_build_seconds = time.perf_counter() - started
    if report is not None:
        report(1.0)
    return module


def status() -> str:
    """One line: which path SML's conv layers take on the CPU, and why."""
    if not enabled_by_env():
        return "torch ops (SML_SIM_FUSED=0)"
    if kernel() is not None:
        return "fused C++ kernel"
    return f"torch ops (the fused kernel did not build: {_failure})"


def fallback_note() -> str | None:
    """A line for the user when the kernel was wanted but did not build; None otherwise."""
    if not enabled_by_env() or _failure is None:
        return None
    return (f"SML's transfer runs on plain torch ops on the CPU (1.2-1.4x slower): its fused kernel did "
            f"not build ({_failure}). It needs a C++ compiler (g++ or clang) and ninja; "
            f"SML_SIM_FUSED=0 skips the attempt.")


class _FusedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h0, *weights):
        ctx.save_for_backward(h0, *weights)
        return _module.conv_forward(h0, list(weights))

    @staticmethod
    @once_differentiable  # first-order only: a second derivative raises instead of coming out wrong
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
    @once_differentiable
    def backward(ctx, grad_out):
        (slope,) = ctx.saved_tensors
        return grad_out * slope


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU that keeps its derivative for backward (the kernel's); F.gelu without gradients."""
    if not (torch.is_grad_enabled() and x.requires_grad) or not usable_for_tensors(x):
        return torch.nn.functional.gelu(x)
    return _GeluSlope.apply(x.contiguous())


MAX_DIM = 1024  # the kernel keeps a row's pre-activations on the stack (kMaxDim in the C++)


def usable_for(h0: torch.Tensor, weights=()) -> bool:
    """Whether the kernel takes this stacked [3, rows, d] input and these filters (else the ATen ops do)."""
    return (h0.dim() == 3 and h0.shape[2] <= MAX_DIM and all(w.dtype == h0.dtype for w in weights)
            and usable_for_tensors(h0, *weights))


def usable_for_tensors(*tensors) -> bool:
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors) \
        and kernel() is not None


def fused_conv(h0: torch.Tensor, weights) -> torch.Tensor:
    """GELU conv layers on a stacked [3, rows, d] input -> [rows, C_last * d] (channel-major)."""
    if not usable_for(h0, weights):
        raise RuntimeError(f"the fused conv kernel cannot take these tensors ({status()})")
    return _FusedConv.apply(h0.contiguous(), *[w.contiguous() for w in weights])
