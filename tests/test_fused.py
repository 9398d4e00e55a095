"""The fused CPU kernel of the transfer's conv layers and FC GELU (sml_sim/models/fused.py):
the same function and gradients as the ATen ops, any thread count, and a fallback that works."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sml_sim.models import fused
from sml_sim.models.transfer import CNNTransfer, conv_layers_aten
from sml_sim.retrainers.sml import GROUPS
from tests.test_sml import run_scores, started, tiny_dataset

needs_kernel = pytest.mark.skipif(fused.kernel() is None, reason=f"no fused kernel here: {fused.status()}")


def inputs(rows, d, channels, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(3, rows, d, generator=g, dtype=dtype)
    weights, c_in = [], 3
    for c_out in channels:
        weights.append(torch.randn(c_out, c_in, generator=g, dtype=dtype) / c_in ** 0.5)
        c_in = c_out
    return h0, weights


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("rows, d, channels", [
    (37, 64, (10, 5)),   # the paper's layers
    (1, 7, (10, 5)),     # a row narrower than a vector register, a single row
    (20, 16, (4,)),      # one conv layer
    (19, 33, (4, 6, 6)),  # three
    (0, 64, (10, 5)),    # an empty batch
])
def test_conv_matches_aten_in_values_and_gradients(dtype, tol, rows, d, channels):
    h0, weights = inputs(rows, d, channels, dtype)
    a = [h0.clone().requires_grad_(), *[w.clone().requires_grad_() for w in weights]]
    b = [h0.clone().requires_grad_(), *[w.clone().requires_grad_() for w in weights]]
    out_ref, out = conv_layers_aten(a[0], a[1:]), fused.fused_conv(b[0], b[1:])
    assert out.shape == out_ref.shape == (rows, channels[-1] * d)
    torch.testing.assert_close(out, out_ref, rtol=tol, atol=tol)
    grad = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for got, want in zip(torch.autograd.grad(out, b, grad), torch.autograd.grad(out_ref, a, grad)):
        torch.testing.assert_close(got, want, rtol=tol * 10, atol=tol * 10)


@needs_kernel
def test_gradcheck_in_float64():
    h0, weights = inputs(5, 9, (3, 2), torch.float64, seed=2)
    args = (h0.requires_grad_(), *[w.requires_grad_() for w in weights])
    assert torch.autograd.gradcheck(lambda x, *ws: fused.fused_conv(x, ws), args)
    x = torch.randn(4, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused.gelu, (x,))


@needs_kernel
def test_only_the_gradients_asked_for_are_computed():
    h0, weights = inputs(12, 16, (10, 5), torch.float64)
    x = h0.clone().requires_grad_()
    out = fused.fused_conv(x, weights)  # weights without requires_grad: step 1 of SML
    (gx,) = torch.autograd.grad(out.sum(), x)
    x2 = h0.clone().requires_grad_()
    (gx_ref,) = torch.autograd.grad(conv_layers_aten(x2, weights).sum(), x2)
    torch.testing.assert_close(gx, gx_ref)
    ws = [w.clone().requires_grad_() for w in weights]
    out = fused.fused_conv(h0, ws)  # h0 without requires_grad: only the filters learn
    grads = torch.autograd.grad(out.sum(), ws)
    ws2 = [w.clone().requires_grad_() for w in weights]
    for got, want in zip(grads, torch.autograd.grad(conv_layers_aten(h0, ws2).sum(), ws2)):
        torch.testing.assert_close(got, want)


@needs_kernel
def test_results_do_not_depend_on_the_thread_count():
    h0, weights = inputs(301, 64, (10, 5), torch.float32)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            ws = [w.clone().requires_grad_() for w in weights]
            x = h0.clone().requires_grad_()
            out = fused.fused_conv(x, ws)
            results.append([out, *torch.autograd.grad(out.square().sum(), [x, *ws])])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_gelu_keeps_its_slope_and_matches_aten(dtype, tol):
    x = torch.linspace(-12, 12, 4001, dtype=dtype).reshape(4001, 1).repeat(1, 5)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(fused.gelu(a), F.gelu(b), rtol=tol, atol=tol)
    (ga,) = torch.autograd.grad(fused.gelu(a).sum(), a)
    (gb,) = torch.autograd.grad(F.gelu(b).sum(), b)
    torch.testing.assert_close(ga, gb, rtol=tol * 4, atol=tol * 4)


@needs_kernel
def test_the_transfer_gives_the_same_rows_and_gradients_on_both_paths():
    torch.manual_seed(0)
    net = CNNTransfer(64)
    w_prev = torch.randn(50, 64)
    grads = []
    for use_kernel in (True, False):
        net.fused = use_kernel
        net.zero_grad()
        w_hat = (torch.randn(50, 64, generator=torch.Generator().manual_seed(1))).requires_grad_()
        out = net(w_prev, w_hat)
        out.square().sum().backward()
        grads.append([out.detach(), w_hat.grad, *[p.grad.clone() for p in net.parameters()]])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_rows_wider_than_the_kernel_takes_use_the_aten_ops():
    net = CNNTransfer(fused.MAX_DIM + 1, fc_size=4)
    assert not fused.usable_for(torch.zeros(3, 2, fused.MAX_DIM + 1))
    assert net(torch.randn(2, fused.MAX_DIM + 1), torch.randn(2, fused.MAX_DIM + 1)).shape == (2, fused.MAX_DIM + 1)


def test_step1_runs_the_transfer_with_theta_frozen_and_step2_with_it_trainable():
    """Step 1 needs no gradients of Theta; the kernel cannot see that autograd.grad skips them, so
    Theta's requires_grad is off during step 1, and on again for step 2."""
    ds = tiny_dataset()
    r, _ = started(ds)
    seen = []
    net = r.theta["item"]
    original = net.forward
    net.forward = lambda *a: (seen.append(any(p.requires_grad for p in net.parameters())), original(*a))[1]
    W_prev = {g: r.W[g].clone() for g in GROUPS}
    W_hat, opt = r._new_w_hat(W_prev)
    r._step1(2, ds.period(2), W_prev, W_hat, opt, 1, lambda: None)
    assert seen and not any(seen)
    seen.clear()
    r._step2(2, ds.period(3), W_prev, W_hat, 1, lambda: None)
    assert seen and all(seen)


def test_sml_runs_the_same_without_the_kernel(monkeypatch):
    """SML_SIM_FUSED=0 takes the ATen path; its scores match the kernel's to rounding."""
    ds = tiny_dataset()
    with_kernel = run_scores(ds, upto=4)
    monkeypatch.setenv("SML_SIM_FUSED", "0")
    assert fused.kernel() is None and fused.fallback_note() is None
    assert fused.status() == "torch ops (SML_SIM_FUSED=0)"
    without = run_scores(ds, upto=4)
    assert with_kernel.keys() == without.keys()
    for t in with_kernel:
        for key, value in with_kernel[t].metrics.items():
            assert value == pytest.approx(without[t].metrics[key], abs=0.05), (t, key)


def test_a_failed_build_falls_back_and_says_why(monkeypatch, tmp_path):
    def no_compiler():
        raise RuntimeError("Error building extension 'x'\nc++: command not found")

    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failure", None)
    monkeypatch.setattr(fused, "_build", no_compiler)
    monkeypatch.setenv("SML_SIM_KERNEL_DIR", str(tmp_path / "kernels"))  # nothing built there yet
    reports = []
    assert fused.prepare(reports.append) is None
    assert reports == [0.0, 1.0]
    assert "c++: command not found" in fused.status()
    note = fused.fallback_note()
    assert "did not build" in note and "C++ compiler" in note and "SML_SIM_FUSED=0" in note
    fused.prepare(reports.append)  # tried once per process
    assert reports == [0.0, 1.0]
    net = CNNTransfer(8)
    assert net(torch.randn(3, 8), torch.randn(3, 8)).shape == (3, 8)  # the ATen path
    scores = run_scores(tiny_dataset(), upto=3)
    assert all(r.status == "ok" for r in scores.values())


def test_run_says_when_it_builds_the_kernel_and_when_it_falls_back(cli, tiny_scenario, tmp_path, monkeypatch):
    toml = tiny_scenario(methods=("sml",), n=800, extra="[methods.sml]\nouter_iters = 1\nfc_size = 8\n")
    db = f"sqlite:///{tmp_path}/k.db"

    def no_compiler():
        raise RuntimeError("Error building extension\nc++: command not found")

    built = fused.kernel()
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failure", None)
    monkeypatch.setattr(fused, "_build", no_compiler)
    monkeypatch.setenv("SML_SIM_KERNEL_DIR", str(tmp_path / "kernels"))
    r = cli("run", toml, "--db", db, "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert "building SML's fused CPU kernel" in r.stderr  # no terminal here: said in the log
    assert "note: SML's transfer runs on plain torch ops" in r.stderr and "c++: command not found" in r.stderr
    monkeypatch.setattr(fused, "_failure", None)  # untried again: a run without SML must not try
    r = cli("run", toml, "--db", db, "--threads", "1", "--methods", "full")
    assert r.exit_code == 0 and "fused CPU kernel" not in r.stderr and fused._failure is None
    if built is not None:  # a build that works is announced, then timed
        monkeypatch.setattr(fused, "_module", None)
        monkeypatch.setattr(fused, "_failure", None)
        monkeypatch.setattr(fused, "_build", lambda: built)
        r = cli("run", toml, "--db", db, "--threads", "1")
        assert r.exit_code == 0, r.stderr
        assert "building SML's fused CPU kernel" in r.stderr and "built SML's fused CPU kernel in" in r.stderr
        assert "note:" not in r.stderr


def test_a_lock_left_by_a_killed_build_is_taken_over_and_a_live_ones_is_waited_for(tmp_path, monkeypatch):
    """torch waits forever on its build lock, which a build killed outright leaves behind."""
    import os
    import socket
    import subprocess
    import sys
    import time

    here = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    ours, torchs = tmp_path / fused.BUILD_LOCK, tmp_path / "lock"
    monkeypatch.setattr(fused, "MAX_WAIT_SECONDS", 1)  # a lock wrongly judged live fails fast
    ours.write_text(f"{dead}@{here}")
    torchs.touch()
    with fused.build_lock(tmp_path):  # the holder is gone: both locks are leftovers
        assert ours.read_text() == f"{os.getpid()}@{here}" and not torchs.exists()
    assert not ours.exists()

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ours.write_text(f"{live.pid}@{here}")  # a live build: waited for, then given up on, not taken
        with pytest.raises(RuntimeError, match="another process has been building"):
            with fused.build_lock(tmp_path):
                pass
        assert ours.read_text() == f"{live.pid}@{here}"
    finally:
        live.kill()
    ours.write_text(f"{dead}@another-machine")  # cannot be checked from here: young, so waited for
    with pytest.raises(RuntimeError, match="another process"):
        with fused.build_lock(tmp_path):
            pass
    old = time.time() - fused.STALE_LOCK_SECONDS - 5
    os.utime(ours, (old, old))  # ... and old, so left over
    with fused.build_lock(tmp_path):
        pass
    ours.write_text("")  # left empty by a holder killed between creating and writing it
    os.utime(ours, (old, old))
    assert fused.holder_gone(ours)
    with fused.build_lock(tmp_path):
        pass
    assert not ours.exists()


def test_a_failed_build_is_explained_by_the_compilers_error_not_ninjas_last_line():
    exc = RuntimeError("Error building extension 'sml_sim_fused_x': [1/2] /nonexistent/c++ -MMD -c a.cpp\n"
                       "FAILED: a.o\n/bin/sh: 1: /nonexistent/c++: not found\n"
                       "ninja: build stopped: subcommand failed.")
    assert fused._reason(exc) == "/bin/sh: 1: /nonexistent/c++: not found"
    assert fused._reason(RuntimeError("something odd")) == "RuntimeError: something odd"


@needs_kernel
def test_extreme_inputs_and_second_derivatives():
    x = torch.tensor([-1e38, -1e4, -30.0, 30.0, 1e4, 1e38, float("nan")], requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(fused.gelu(x).sum(), x)
    (g2,) = torch.autograd.grad(F.gelu(x2).sum(), x2)
    torch.testing.assert_close(g, g2, equal_nan=True)
    torch.testing.assert_close(fused.gelu(x.detach().clone().requires_grad_()), F.gelu(x2), equal_nan=True)
    # first-order only: a second derivative raises rather than coming out without the kernel's terms
    h0, weights = inputs(4, 8, (3, 2), torch.float64)
    ws = [w.requires_grad_() for w in weights]
    (g1,) = torch.autograd.grad(fused.fused_conv(h0, ws).square().sum(), ws[0], create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g1.sum(), ws[1])


@needs_kernel
def test_tensors_the_kernel_cannot_take_are_refused_in_words():
    h0, weights = inputs(4, 8, (3, 2), torch.float32)
    assert not fused.usable_for(h0, [w.to("meta") for w in weights])
    assert not fused.usable_for(h0, [w.double() for w in weights])
    with pytest.raises(RuntimeError, match="cannot take these tensors"):
        fused.fused_conv(h0, [w.to("meta") for w in weights])


@needs_kernel
def test_a_cached_build_is_loaded_without_saying_building(monkeypatch):
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failure", None)
    assert not fused.needs_build()
    reports = []
    assert fused.prepare(reports.append) is not None
    assert reports == []


def test_a_fresh_build_folder_needs_a_build(monkeypatch, tmp_path):
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failure", None)
    monkeypatch.setenv("SML_SIM_KERNEL_DIR", str(tmp_path))
    assert fused.needs_build()
    monkeypatch.setenv("SML_SIM_FUSED", "0")
    assert not fused.needs_build()
