"""SML: Sequential Meta-Learning (Zhang et al., SIGIR 2020), instantiated on MF (paper 3.4).

Notation of the paper: W_{t-1} the previous model, W_hat_t the transfer input learned on D_t, Theta
the transfer parameters (one network for user rows, one for item rows), W_t = f_Theta(W_{t-1}, W_hat_t).

Training periods (Algorithm 1), ``fit_period(t, D_{t+1})``::

    W_hat_t <- W_{t-1}                                              (line 3)
    repeat outer_iters times:
        step 1: update W_hat_t on L_r(W_hat_t | D_t), eq. (8)      (line 6, Theta constant)
        if t == T: break                                            (line 8, D_{T+1} unavailable)
        step 2: update Theta on L_s(Theta | D_{t+1}), eq. (10)     (line 9, W_hat_t constant:
                                                                     first-order, eq. 11)
    W_t <- f_Theta(W_{t-1}, W_hat_t)                                (line 11)

Validation and test periods (Algorithm 2). The engine has already tested W_{t-1} on D_t (line 1);
then ``fit_period(t, None)`` does, with the paper's t shifted by one::

    repeat outer_iters times:
        update Theta on L_s(Theta | D_t) using f(W_{t-2}, W_hat_{t-1})          (line 4)
        update W_hat_{t-1} on L_r(W_hat_{t-1} | D_{t-1})                        (line 5)
    update Theta once more; W_{t-1} <- f_Theta(W_{t-2}, W_hat_{t-1})            (line 7)
    W_hat_t <- W_{t-1}; update W_hat_t on L_r(W_hat_t | D_t)                    (line 8)
    W_t <- f_Theta(W_{t-1}, W_hat_t)                                            (line 9)

L0 is the log loss with one sampled negative (eq. 13), averaged over the batch's positives and
negatives (the authors' code sums the two means: twice this). Step 1 and the MF rows of step 2 run the
transfer only on the distinct rows of each batch; the whole tables go through it once per training
period and twice per validation or test period (W_{t-1} is rebuilt by line 7, then W_t by line 9).

Defaults follow the authors' public code (GitHub zyang1580/SML) where the paper is silent: Adam for
W_hat (lr 0.01, l1 = 1e-6 as 0.5 * l1 * sum of squares of the batch's distinct rows; row-sparse, where
that code steps a dense Adam over the whole tables) and for Theta (lr 1e-3,
weight decay 1e-4), both kept across periods; batches 1024 (step 1) and 256 (step 2); one epoch of
each per outer iteration; 10 outer iterations. Step 2's negatives are drawn from the items of its
period, excluding the user's positives there; step 1's from all items seen so far.

Choices the paper leaves open, made here and documented in the README:
* line 8 of Algorithm 2 is one pass of step 1 (``epochs_w_hat`` epochs), read like the same
  statement on line 6 of Algorithm 1 and like its t == T case, where step 1 runs once before the
  break (``serve_w_hat_epochs`` overrides);
* SML-S freezes Theta in every validation/test period and then skips lines 3-7 (with Theta fixed
  they would only re-fit W_hat_{t-1} to old data): it runs lines 8-9 only;
* SML-N replaces D_{t+1} by D_t wherever Theta is trained (so it never needs the next period), and
  still stops after step 1 at t == T (line 8), as the paper changes only line 9 for it;
* SML-FP trains W_hat_t on D_t directly as an MF (eq. 8 without the transfer); Theta as in SML;
* step 2's negative pool (eq. 13 only says "unobserved"): the items of Theta's period by default, as
  the authors' code; ``theta_negatives = "seen"`` draws from every item seen so far instead, as step 1
  and the MF baselines do. On news, where most items are dead, only "seen" teaches Theta that a dead
  item ranks below a live one.

Two options depart from the paper and are off by default.

``max_row_norm = R`` scales every row of W_t longer than R down to length R after each period (a
max-norm constraint). Every row goes through the transfer every period, so a row of a dead item is
mapped period after period by a map Theta is never trained to keep bounded; on synthetic-adressa its
norm can grow several-fold per period until the log loss overflows. The bound stops that; together
with ``theta_negatives = "seen"`` it made SML reliable there at the default scale (at scale 0.1 it
stops the collapse, but scores still swing from period to period; BENCHMARKS.md). R is an absolute
length: it depends on the data and its scale.

With ``idle_rows = "keep"``, an idle row (seen in an earlier period, no interaction in D_t) keeps
W_{t-1} when W_t is produced; active rows and rows not seen yet go through the transfer as in the
paper. It was the first attempt at the same divergence: it stops it but scores far worse (frozen
dead items outrank fresh ones), so it is kept as an ablation of the paper's mapping of every row,
not as a fix. Rows not seen yet always stay in the transfer: mapping fresh random rows is how SML
serves new items.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from sml_sim.data.base import PeriodData
from sml_sim.models import fused
from sml_sim.models.mf import RowAdam, log_loss
from sml_sim.models.transfer import CNNTransfer, apply_in_chunks, build_transfer, first_layer_filters
from sml_sim.retrainers import register
from sml_sim.retrainers.base import ReplayContext, Retrainer
from sml_sim.retrainers.mf_methods import mf_scores, mf_user_scores

GROUPS = ("user", "item")


@torch.no_grad()
def he_init(net: torch.nn.Module) -> None:
    """He-normal weights and zero biases for every weight matrix of a transfer network.

    PyTorch's default init shrinks the signal at every layer, so a fresh CNN transfer outputs nearly
    the same row whatever its input (row std ~0.005 against a norm of ~0.23 on synthetic-yelp): a
    saddle where user and item outputs are both constant and the log loss gives Theta no gradient
    towards using its input. He init keeps the signal's scale through the GELU layers.
    """
    for name, p in net.named_parameters():
        if p.dim() >= 2:
            torch.nn.init.kaiming_normal_(p, nonlinearity="relu")
        elif name.endswith("bias"):
            p.zero_()


class SML(Retrainer):
    kind = "sml"
    needs_initial_mf = True
    uses_next_period = True

    defaults = {
        "transfer": "cnn",          # cnn | weighted-sum | mlp
        "n1": 10, "n2": 5, "conv_layers": 2, "fc_size": 512, "use_conv": True, "use_fc": True,
        "detach_product": True,     # the stack's product row uses W_hat detached (the authors' code)
        "alpha": 0.5, "learn_alpha": True, "mlp_hidden": 512,
        "outer_iters": 10,
        "epochs_w_hat": 1, "epochs_theta": 1,
        "lr_w_hat": 0.01, "lr_theta": 1e-3,
        "l1": 1e-6, "l2": 1e-4,
        "batch_w_hat": 1024, "batch_theta": 256,
        "serve_w_hat_epochs": 0,    # Algorithm 2 line 8; 0: one pass of epochs_w_hat, as line 6
        "theta_init": "pytorch",    # pytorch (the authors' code) | he (He-normal weights, zero biases)
        "theta_on": "next",         # next (SML) | current (SML-N)
        "freeze_theta_serving": False,  # SML-S
        "w_hat_through_transfer": True,  # False: SML-FP
        "idle_rows": "transfer",    # transfer (paper: every row) | keep (rows absent from D_t keep W_{t-1})
        "theta_negatives": "period",  # period (the authors' code: items of Theta's period) | seen (all items so far)
        "max_row_norm": 0.0,        # > 0: rows of W_t longer than this are scaled down to it (0: off, as the paper)
    }

    meanings = {
        "transfer": "the transfer network (paper 3.2)", "n1": "first conv layer's 3x1 filters",
        "n2": "filters of each further conv layer", "conv_layers": "conv layers (paper 4.4.2)",
        "fc_size": "FC layer size d_f (eq. 6)", "use_conv": "false: SML-CNN", "use_fc": "false: SML-FC",
        "detach_product": "product row of eq. 4 uses W_hat detached (the authors' code)",
        "alpha": "weighted-sum weight of W_{t-1}", "learn_alpha": "weighted sum: learn alpha",
        "mlp_hidden": "MLP transfer's hidden size", "outer_iters": "alternations of steps 1 and 2 per period",
        "epochs_w_hat": "step 1 epochs per outer iteration (0: skipped)",
        "epochs_theta": "step 2 epochs per outer iteration (0: skipped)", "lr_w_hat": "Adam lr of W_hat",
        "lr_theta": "Adam lr of Theta", "l1": "eq. 8's lambda_1: an L2 penalty on W_hat's batch rows", "l2": "Theta's weight decay",
        "batch_w_hat": "interactions per step-1 batch", "batch_theta": "interactions per step-2 batch",
        "serve_w_hat_epochs": "Algorithm 2 line 8 epochs (0: as epochs_w_hat)",
        "theta_init": "Theta's initialisation", "theta_on": "current: SML-N",
        "freeze_theta_serving": "true: SML-S", "w_hat_through_transfer": "false: SML-FP",
        "idle_rows": "keep: rows idle in D_t keep W_{t-1} (not the paper)",
        "theta_negatives": "step 2's negative pool: the period's items or all seen",
        "max_row_norm": "bound on W_t's row length (0: off, as the paper)",
    }
    choices = {
        "transfer": ("cnn", "weighted-sum", "mlp"), "theta_init": ("pytorch", "he"),
        "theta_on": ("next", "current"), "idle_rows": ("transfer", "keep"),
        "theta_negatives": ("period", "seen"),
    }

    @classmethod
    def settings_problem(cls, settings: dict) -> str | None:
        if settings["transfer"] == "weighted-sum" and settings["learn_alpha"] and not 0 < settings["alpha"] < 1:
            return f"a learned alpha must start strictly between 0 and 1, not {settings['alpha']!r}"
        if settings["transfer"] == "cnn" and settings["use_conv"] and settings["conv_layers"] < 1:
            return "conv_layers must be at least 1 while use_conv is true (use_conv = false drops them)"
        return None

    # The settings each transfer network reads (paper 3.2); under another transfer they do nothing.
    TRANSFER_SETTINGS = {"cnn": ("n1", "n2", "conv_layers", "fc_size", "use_conv", "use_fc", "detach_product"),
                         "weighted-sum": ("alpha", "learn_alpha"), "mlp": ("mlp_hidden",)}

    @classmethod
    def idle_settings(cls, given: set[str], settings: dict) -> list[str]:
        idle = {k for kind, keys in cls.TRANSFER_SETTINGS.items() if kind != settings["transfer"] for k in keys}
        if settings["transfer"] == "cnn" and not settings["use_conv"]:
            idle |= {"n1", "n2", "conv_layers"}
        if settings["transfer"] == "cnn" and not settings["use_fc"]:
            idle.add("fc_size")
        return sorted(given & idle)

    def hp(self, key: str):
        default = self.defaults[key]
        value = self.params.get(key, default)
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return type(default)(value)

    # -------------------------------------------------------------- setup

    def start(self, ctx: ReplayContext, initial=None) -> None:
        super().start(ctx)
        if self.hp("theta_on") == "current":
            self.uses_next_period = False
        dim = initial.P.shape[1]
        g = torch.random.fork_rng(devices=[])
        with g:  # transfer init from the run's seed, whatever the global RNG state
            torch.manual_seed(int(ctx.generator(self.name, "theta-init").initial_seed() % (2**31)))
            self.theta = {grp: self._make_transfer(dim).to(ctx.device) for grp in GROUPS}
            if self.hp("theta_init") == "he":
                for net in self.theta.values():
                    he_init(net)
            elif self.hp("theta_init") != "pytorch":
                raise ValueError(f"{self.name}: theta_init must be pytorch or he, not {self.hp('theta_init')!r}")
        if ctx.device.type == "cpu" and any(isinstance(net, CNNTransfer) for net in self.theta.values()):
            # built once per machine (about half a minute), loaded in a fraction of a second after
            fused.prepare(lambda f: ctx.progress and ctx.progress("kernel", f))
        if self.hp("theta_negatives") not in ("period", "seen"):
            raise ValueError(f"{self.name}: theta_negatives must be period or seen, "
                             f"not {self.hp('theta_negatives')!r}")
        if self.hp("max_row_norm") < 0:
            raise ValueError(f"{self.name}: max_row_norm must be >= 0 (0 turns it off)")
        if self.hp("idle_rows") not in ("transfer", "keep"):
            raise ValueError(f"{self.name}: idle_rows must be transfer or keep, not {self.hp('idle_rows')!r}")
        params = [p for net in self.theta.values() for p in net.parameters()]
        # A fixed weighted sum has nothing to learn: step 2 is then skipped.
        # The fused Adam (one kernel per tensor) costs ~0.2 ms per step against ~1.9 ms for the
        # per-tensor loop torch uses on the CPU by default: a tenth of a step-2 batch.
        self.theta_opt = torch.optim.Adam(params, lr=self.hp("lr_theta"), weight_decay=self.hp("l2"),
                                          fused=True) if params else None
        self.W = {"user": initial.P.detach().clone(), "item": initial.Q.detach().clone()}  # W_{t-1}
        self.W_prev: dict[str, torch.Tensor] | None = None  # W_{t-2}
        self.W_hat: dict[str, torch.Tensor] | None = None  # W_hat_{t-1}
        self.w_hat_opt: dict[str, RowAdam] | None = None
        self.trained_upto = ctx.dataset.split.retrain_start - 1
        self.row_passes = 0
        if self.hp("idle_rows") == "keep":
            # Period of each row's first interaction: a row whose first period is >= t has not been
            # seen by the end of t - 1 (no look-ahead: only compared with the current period).
            self._first_period = {g: torch.as_tensor(f, device=ctx.device)
                                  for g, f in zip(GROUPS, ctx.dataset.first_periods())}

    def _make_transfer(self, dim: int):
        kind = self.hp("transfer")
        if kind == "cnn":
            return build_transfer("cnn", dim, n1=self.hp("n1"), n2=self.hp("n2"), conv_layers=self.hp("conv_layers"),
                                  fc_size=self.hp("fc_size"), use_conv=self.hp("use_conv"), use_fc=self.hp("use_fc"),
                                  detach_product=self.hp("detach_product"))
        if kind == "weighted-sum":
            return build_transfer("weighted-sum", dim, alpha=self.hp("alpha"), learn_alpha=self.hp("learn_alpha"))
        if kind == "mlp":
            return build_transfer("mlp", dim, hidden=self.hp("mlp_hidden"))
        raise ValueError(f"{self.name}: unknown transfer {kind!r} (cnn, weighted-sum or mlp)")

    # -------------------------------------------------------------- the two steps

    def _batches(self, data: PeriodData, batch_size: int, epochs: int, gen: torch.Generator, negatives):
        users, items = self.ctx.tensors(data)
        n = len(users)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen, device=self.ctx.device)
            for lo in range(0, n, batch_size):
                b = order[lo:lo + batch_size]
                yield users[b], items[b], negatives(users[b], gen)

    @staticmethod
    def _batch_rows(u, i, j):
        ru, inv_u = torch.unique(u, return_inverse=True)
        ri, inv_ij = torch.unique(torch.cat([i, j]), return_inverse=True)
        return {"user": ru, "item": ri}, inv_u, inv_ij[: len(i)], inv_ij[len(i):]

    def _step1(self, t: int, data: PeriodData, W_prev, W_hat, opt, epochs: int, tick) -> float:
        """Learn W_hat on D_t through the transfer (eq. 8-9); Theta is not stepped. Returns the mean
        batch loss, or None when there was nothing to do (no epochs, or an empty period)."""
        if epochs <= 0 or len(data) == 0:
            return None
        gen = self.ctx.generator(self.name, t, "step1", data.index, opt["user"].steps)
        n_seen = self.ctx.n_items_seen(data.index)
        dev = self.ctx.device

        def negatives(u, g):
            return torch.randint(0, n_seen, (len(u),), generator=g, device=dev)

        through = self.hp("w_hat_through_transfer")
        l1 = self.hp("l1")
        total, count = torch.zeros((), device=dev), 0
        # Theta is not stepped here: without requires_grad no backward computes its gradients
        # (autograd.grad below prunes them, but the fused conv kernel cannot tell).
        with _no_parameter_grads(self.theta.values()):
            for u, i, j in self._batches(data, self.hp("batch_w_hat"), epochs, gen, negatives):
                rows, iu, ii, ij = self._batch_rows(u, i, j)
                # forward + gradients of the activations (autograd.grad w.r.t. W_hat skips Theta's)
                self.row_passes += 2 * sum(len(rows[g]) for g in GROUPS) if through else 0
                hat = {g: W_hat[g].index_select(0, rows[g]).requires_grad_(True) for g in GROUPS}
                if through:
                    new = {g: self.theta[g](W_prev[g].index_select(0, rows[g]), hat[g]) for g in GROUPS}
                else:  # SML-FP: W_hat is fitted to D_t as a plain MF
                    new = hat
                pu, qi, qj = _gather(new["user"], iu), _gather(new["item"], ii), _gather(new["item"], ij)
                loss = log_loss((pu * qi).sum(1), (pu * qj).sum(1))
                reg = 0.5 * l1 * (hat["user"].pow(2).sum() + hat["item"].pow(2).sum())
                grads = torch.autograd.grad(loss + reg, [hat["user"], hat["item"]])
                for g, grad in zip(GROUPS, grads):
                    opt[g].step(rows[g], grad, unique=True)
                total += loss.detach()  # summed on the device: no host sync per batch
                count += 1
                tick()
        return float(total) / max(1, count)

    def _step2(self, t: int, data: PeriodData, W_prev, W_hat, epochs: int, tick) -> float:
        """Learn Theta on ``data`` with W_hat constant (eq. 10-11, first-order). Returns the mean
        batch loss, or None when there was nothing to do (nothing to learn, no epochs, empty data)."""
        if self.theta_opt is None or epochs <= 0 or len(data) == 0:
            return None
        gen = self.ctx.generator(self.name, t, "step2", data.index, self.theta_opt_steps())
        users, items = self.ctx.tensors(data)
        present = self._theta_negative_pool(data)
        n_items = self.ctx.dataset.n_items
        pos_keys = torch.unique(users * n_items + items)
        dev = self.ctx.device

        def negatives(u, g):
            # Uniform over the pool, excluding the user's positives in the period: clashes are
            # redrawn twice (no host sync to test for them; a rare clash may survive).
            j = present[torch.randint(0, len(present), (len(u),), generator=g, device=dev)]
            for _ in range(2):
                key = u * n_items + j
                pos = torch.searchsorted(pos_keys, key).clamp(max=len(pos_keys) - 1)
                redraw = present[torch.randint(0, len(present), (len(u),), generator=g, device=dev)]
                j = torch.where(pos_keys[pos] == key, redraw, j)
            return j

        total, count = torch.zeros((), device=dev), 0
        for u, i, j in self._batches(data, self.hp("batch_theta"), epochs, gen, negatives):
            rows, iu, ii, ij = self._batch_rows(u, i, j)
            self.row_passes += 3 * sum(len(rows[g]) for g in GROUPS)  # forward, activation and weight gradients
            new = {g: self.theta[g](W_prev[g].index_select(0, rows[g]), W_hat[g].index_select(0, rows[g]))
                   for g in GROUPS}
            pu, qi, qj = _gather(new["user"], iu), _gather(new["item"], ii), _gather(new["item"], ij)
            loss = log_loss((pu * qi).sum(1), (pu * qj).sum(1))
            self.theta_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.theta_opt.step()
            total += loss.detach()
            count += 1
            tick()
        return float(total) / max(1, count)

    def _theta_negative_pool(self, data: PeriodData) -> torch.Tensor:
        """Items step 2 draws its negatives from: those of ``data`` (the authors' code), or with
        ``theta_negatives = "seen"`` every item seen up to the end of ``data``'s period, as step 1 and
        the MF baselines draw theirs (the paper does not say which)."""
        if self.hp("theta_negatives") == "seen":
            return torch.arange(self.ctx.n_items_seen(data.index), device=self.ctx.device)
        return torch.unique(self.ctx.tensors(data)[1])

    def theta_opt_steps(self) -> int:
        states = list(self.theta_opt.state.values()) if self.theta_opt is not None else []
        return int(states[0]["step"]) if states else 0

    def _transfer_all(self, W_prev, W_hat, data: PeriodData) -> dict:
        """W = f_Theta(W_prev, W_hat) over the whole tables, W_hat learned on ``data``.

        With ``idle_rows = "keep"`` the idle rows (seen in an earlier period, absent from ``data``)
        keep W_prev; the others, including rows not seen yet, go through the transfer (a departure
        from the paper, see the module docstring).
        """
        if self.hp("idle_rows") == "transfer":
            self.row_passes += sum(len(W_prev[g]) for g in GROUPS)  # forward only
            new = {g: apply_in_chunks(self.theta[g], W_prev[g], W_hat[g]) for g in GROUPS}
        else:
            new = {}
            for g, ids in zip(GROUPS, self.ctx.tensors(data)):
                moving = self._first_period[g] >= data.index  # not seen before this period...
                moving[ids] = True  # ...or active in it
                rows = moving.nonzero().squeeze(1)
                self.row_passes += len(rows)
                new[g] = W_prev[g].clone()
                new[g].index_copy_(0, rows, apply_in_chunks(self.theta[g], W_prev[g].index_select(0, rows),
                                                            W_hat[g].index_select(0, rows)))
        return self._bound(new)

    def _bound(self, W: dict) -> dict:
        """With ``max_row_norm`` = R > 0, scale every row of W_t longer than R down to length R, in
        place (a max-norm constraint applied once per period, after the transfer; not in the paper)."""
        limit = self.hp("max_row_norm")
        if limit > 0:
            for table in W.values():
                table.mul_(limit / torch.linalg.vector_norm(table, dim=1, keepdim=True).clamp(min=limit))
        return W

    def _new_w_hat(self, W_init) -> tuple[dict, dict]:
        W_hat = {g: W_init[g].clone() for g in GROUPS}
        if self.w_hat_opt is None:
            self.w_hat_opt = {g: RowAdam(W_hat[g], self.hp("lr_w_hat")) for g in GROUPS}
        else:  # the optimiser's moments live across periods; it now steps the new W_hat
            for g in GROUPS:
                self.w_hat_opt[g].table = W_hat[g]
        return W_hat, self.w_hat_opt

    # -------------------------------------------------------------- one period

    def fit_period(self, t: int, next_period: PeriodData | None = None) -> dict:
        ds = self.ctx.dataset
        serving = t > ds.split.train[1]
        D_t = ds.period(t)
        if len(D_t) == 0:  # (a night slot of a tiny news stream) nothing to learn W_hat_t from: W_t = W_{t-1}
            self.trained_upto = t
            return {"empty_period": True}
        iters = self.hp("outer_iters")
        e1, e2 = self.hp("epochs_w_hat"), self.hp("epochs_theta")
        n1 = -(-len(D_t) // self.hp("batch_w_hat"))
        n2 = -(-len(D_t) // self.hp("batch_theta"))
        serve_epochs = self.hp("serve_w_hat_epochs") or e1
        freeze = serving and self.hp("freeze_theta_serving")
        if not serving:
            planned = iters * (n1 * e1 + n2 * e2)
        elif freeze:
            planned = n1 * serve_epochs
        else:
            prev_n1 = -(-len(ds.period(t - 1)) // self.hp("batch_w_hat"))
            planned = (iters + 1) * n2 * e2 + iters * prev_n1 * e1 + n1 * serve_epochs
        done = [0]

        def tick() -> None:
            done[0] += 1
            self.report(min(1.0, done[0] / max(1, planned)))

        losses = {}
        # Rows through the transfer, in forward-pass equivalents (throughput figures): a forward
        # counts 1, a step-1 row 2 (forward + activation gradients), a step-2 row 3.
        self.row_passes = 0
        if not serving:
            # Algorithm 1 for task t.
            W_prev = self.W
            W_hat, opt = self._new_w_hat(W_prev)
            theta_data = D_t if self.hp("theta_on") == "current" else next_period
            last_training = t == ds.split.train[1]  # t == T: D_{T+1} is a validation period
            for _ in range(iters):
                losses["step1"] = self._step1(t, D_t, W_prev, W_hat, opt, e1, tick)
                # Line 8. SML-N replaces only line 9's D_{t+1} by D_t (paper 4.3), so it breaks here too.
                if last_training or theta_data is None:
                    break
                losses["step2"] = self._step2(t, theta_data, W_prev, W_hat, e2, tick)
        else:
            if self.W_hat is None:
                raise RuntimeError(f"{self.name}: serving period {t} reached without a trained W_hat")
            if not freeze:
                # Algorithm 2, lines 3-7: refresh Theta on the newly arrived D_t and W_hat_{t-1} on D_{t-1}.
                W_prev2, W_hat_prev = self.W_prev, self.W_hat
                theta_data = D_t if self.hp("theta_on") == "next" else ds.period(t - 1)
                for _ in range(iters):
                    losses["step2"] = self._step2(t, theta_data, W_prev2, W_hat_prev, e2, tick)
                    losses["step1"] = self._step1(t, ds.period(t - 1), W_prev2, W_hat_prev, self.w_hat_opt, e1, tick)
                losses["step2"] = self._step2(t, theta_data, W_prev2, W_hat_prev, e2, tick)
                self.W = self._transfer_all(W_prev2, W_hat_prev, ds.period(t - 1))  # refreshed W_{t-1}
            # Lines 8-9: learn W_hat_t on D_t and output W_t.
            W_prev = self.W
            W_hat, opt = self._new_w_hat(W_prev)
            losses["step1"] = self._step1(t, D_t, W_prev, W_hat, opt, serve_epochs, tick)
        self.W_prev, self.W_hat = W_prev, W_hat
        self.W = self._transfer_all(W_prev, W_hat, D_t)
        self.trained_upto = t
        losses = {k: v for k, v in losses.items() if v is not None}  # steps that had nothing to do
        for name, value in losses.items():
            if value != value:
                raise FloatingPointError(f"SML {name} loss became NaN")
        extra = {f"loss_{k}": float(v) for k, v in losses.items()}
        extra["transfer_row_passes"] = self.row_passes
        extra["transfer_macs_per_row"] = int(getattr(self.theta["user"], "flops_per_row", lambda: 0)())
        filters = {g: first_layer_filters(self.theta[g]) for g in GROUPS}
        if all(f is not None for f in filters.values()):
            extra["filters"] = {g: f.tolist() for g, f in filters.items()}
        return extra

    # -------------------------------------------------------------- serving and state

    scores_into_buffer = True

    @torch.no_grad()
    def score(self, cases, rows: np.ndarray, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return mf_scores(self.W["user"], self.W["item"], cases, rows, n_items, out)

    @torch.no_grad()
    def score_users(self, users: torch.Tensor, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """W_t's scores depend on the user only, so evaluation scores each distinct user once."""
        return mf_user_scores(self.W["user"], self.W["item"], users, n_items, out)

    def state_dict(self) -> dict:
        return {
            "W": self.W, "W_prev": self.W_prev, "W_hat": self.W_hat,
            "w_hat_opt": None if self.w_hat_opt is None else {g: o.state_dict() for g, o in self.w_hat_opt.items()},
            "theta": {g: net.state_dict() for g, net in self.theta.items()},
            "theta_opt": None if self.theta_opt is None else self.theta_opt.state_dict(),
            "trained_upto": self.trained_upto,
        }

    def load_state_dict(self, state: dict) -> None:
        self.W, self.W_prev, self.W_hat = state["W"], state["W_prev"], state["W_hat"]
        for g, net in self.theta.items():
            net.load_state_dict(state["theta"][g])
        if self.theta_opt is not None:
            self.theta_opt.load_state_dict(state["theta_opt"])
        if state["w_hat_opt"] is not None:
            self.w_hat_opt = {g: RowAdam(self.W_hat[g], self.hp("lr_w_hat")) for g in GROUPS}
            for g in GROUPS:
                self.w_hat_opt[g].load_state_dict(state["w_hat_opt"][g])
        self.trained_upto = state["trained_upto"]


@contextmanager
def _no_parameter_grads(modules):
    """Turn requires_grad off on the modules' parameters for the block, then back on."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _gather(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """rows[index], as index_select: on the CPU it gathers (and its backward scatters) several times
    faster than advanced indexing, a few percent of an SML period at scale 1.0."""
    return rows.index_select(0, index)


VARIANTS = {
    "sml": ({}, "SML: CNN transfer, Theta meta-trained on the next period (the paper's method)"),
    "sml-cnn": ({"use_conv": False}, "SML ablation: transfer without the conv layers"),
    "sml-fc": ({"use_fc": False}, "SML ablation: transfer without the FC layer"),
    "sml-n": ({"theta_on": "current"}, "SML ablation: Theta trained on D_t, not D_{t+1}"),
    "sml-s": ({"freeze_theta_serving": True}, "SML ablation: Theta frozen in validation/test periods"),
    "sml-fp": ({"w_hat_through_transfer": False}, "SML ablation: W_hat trained on D_t directly"),
    "sml-ws": ({"transfer": "weighted-sum", "learn_alpha": True}, "SML with a learned weighted-sum transfer"),
    "sml-ws-fixed": ({"transfer": "weighted-sum", "learn_alpha": False, "alpha": 0.5},
                     "SML with a fixed weighted sum (alpha 0.5)"),
    "sml-mlp": ({"transfer": "mlp"}, "SML with an MLP transfer on [w_prev, w_hat]"),
}
for _name, (_preset, _desc) in VARIANTS.items():
    register(_name, SML, _preset, _desc, variant_of=None if _name == "sml" else "sml")
