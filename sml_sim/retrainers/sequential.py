"""Sequential baselines of the paper (4.1.2): GRU4Rec, fully retrained every period, and Caser,
fine-tuned on each new period. Both read each user's time-ordered history (``models/sequential.py``).

GRU4Rec variant implemented: **windowed sequence training with sampled softmax**
-------------------------------------------------------------------------------
* Data: at period t, every user's whole history in periods 0..t (``BOS, i_1, ..., i_m``) is cut
  from its end into windows of ``max_len`` consecutive targets; a GRU runs over each window and
  every position predicts the next item (sequence-to-sequence training: each interaction is a
  target exactly once per epoch). A window that starts mid-history starts from a zero hidden state
  (the context before it is cut), the first window of a user starts with BOS, so the first item is
  learned from an empty history. This replaces the original session-parallel mini-batches (which
  carry the hidden state across batches) with independent windows, which shuffle and batch freely.
* Loss: softmax cross-entropy of the true next item against ``negatives`` items drawn uniformly
  (with replacement) from the items seen up to t, shared by the whole batch; a negative equal to a
  position's target is masked out. ``negatives = 0`` uses the full softmax over every item seen so
  far instead (exact; on MovieLens-100k, 1.7k items, twice as slow and no better on validation;
  the gap grows with the number of items). This is the cross-entropy loss of the authors'
  later GRU4Rec (``loss='cross-entropy'``) with uniform rather than popularity-based and mini-batch
  negatives; there is no BPR-max/TOP1-max here.
* Model: item embedding (``emb_dim``) -> dropout -> one GRU layer (``hidden``) -> dropout -> scores
  ``h . out_i + b_i`` against a separate item output table with per-item bias.
* Retraining: at every period on all of periods 0..t, warm-started from the previous period's
  weights and Adam state, ``epochs`` epochs. Before the first retraining period the model is
  pre-trained on periods 0..retrain_start-1 for ``pretrain_epochs`` (in ``start``, like the MF
  methods' shared initial model); its time is reported as ``pretrain_s`` in the first period's facts.
* Scoring a case at stream position p: the user's last ``max_len`` interactions with an earlier
  time than p's (earlier test-period interactions included as input, never p, later ones, or ones
  of the same time, whose order in the stream is the file's), prefixed with BOS when the user has
  fewer than ``max_len``; the final hidden state is scored against all items.

Caser (Tang & Wang, WSDM 2018)
-------------------------------
* Model as in the authors' PyTorch code: vertical (``n_v`` filters of L x 1) and horizontal
  (``n_h`` filters of each height 1..L, ReLU, max over time) convolutions over the embeddings of
  the L most recent items, dropout, a ReLU fully connected layer to d, concatenated with the user
  embedding (d), scored by an item output table of size 2d plus bias.
* Loss: binary cross-entropy of each of the T next items (label 1) and ``neg_per_target`` * T items
  drawn uniformly from the items seen so far (label 0; the original excludes the user's items and
  draws ``neg_per_target`` per window; here an accidental hit, about 6% of draws on MovieLens, is
  kept). Adam with weight decay ``l2``.
* Examples: one per interaction (its first target); input = the user's L items before it, left-
  padded with a zero PAD row (the original slides windows of L + T, pads only short users, and
  learns its padding embedding); targets = it and the user's next T-1 items, cut at the end of the
  period trained on. Embeddings start at std 0.02 (the original: 1/(2d) for the output table).
* Training: pre-trained in ``start`` on every example whose first target lies in periods
  0..retrain_start-1 (``pretrain_epochs``), then fine-tuned at period t on the examples whose first
  target lies in period t (``epochs``); their input windows may reach back into earlier periods.
  The Adam state is kept across periods.

Both, at scoring time (defined behaviours):
* A case's input is the user's interactions with an earlier time than the case's: ties in time keep
  the file's order, which is not the user's (MovieLens rates many items within one second).
* A user without history: GRU4Rec scores the learned empty-history state (BOS alone); Caser uses an
  all-padding window, i.e. the user embedding (plus learned biases) alone.
* A user first seen after the last period trained on has no trained embedding: Caser uses a zero
  user vector. An input item first seen after that period (it can appear in a test case's history)
  has no trained embedding either and enters as padding (an unknown item).
* Items first seen after the last period trained on are scored below every trained item of the
  row (their output rows were never trained; their order among themselves is left to ties).

All randomness is drawn from ``ctx.generator(name, ...)``; model and Adam state are checkpointed,
so a killed run resumes identically (a resumed run repeats the pre-training in ``start`` before the
checkpoint replaces it: wasted time, same results).

Defaults were picked on the validation periods of MovieLens-100k (Recall@20, periods 30-32; test
periods never looked at; differences under ~0.015 are seed noise). GRU4Rec: dropout 0.4 (0.1: 0.42,
0.25: 0.44, 0.4: 0.45-0.46 over two seeds, 0.55: 0.455), 2 epochs per period (1 or 3: ~0.02 lower),
lr 2e-3 (5e-3 lower), hidden 64 (128: no better, 1.7x slower), max_len 50 (20: slightly lower),
256 sampled negatives (full softmax: no better, 2x slower). Caser: the paper's settings (L 5, T 3,
d 50, n_v 4, n_h 16, dropout 0.5) with lr 1e-3, 30 pre-training epochs (15: lower; 50: +0.015 on one
seed for 1.7x the pre-training time), 10 fine-tuning epochs per period (5 or 20: lower). These
figures were measured while same-second interactions still counted as history; without them the
validation Recall@20 of the defaults is 0.442 (GRU4Rec) and 0.367 (Caser), 0.02-0.03 lower. The
choices were not re-tuned.
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from sml_sim.models.sequential import (
    CASER_SHIFT,
    GRU_SHIFT,
    CaserNet,
    GRU4RecNet,
    UserIndex,
    caser_examples,
    gather_items,
    gru_score_inputs,
    gru_windows,
    init_module,
)
from sml_sim.retrainers import register
from sml_sim.retrainers.base import ReplayContext, Retrainer

SCORE_ROWS = 2048  # rows per forward pass when scoring


class SequentialRetrainer(Retrainer):
    """Shared machinery: hyperparameters, Adam kept across periods, the training loop with progress
    and cancellation, the history index for scoring, checkpoints."""

    needs_initial_mf = False
    defaults: dict = {}

    def hp(self, key: str):
        return self.param(key, self.defaults[key])

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """The sequential network of this method, freshly initialised."""

    def start(self, ctx: ReplayContext, initial=None) -> None:
        super().start(ctx)
        self.model = self.build_model().to(ctx.device)
        init_module(self.model, ctx.generator(self.name, "init"), std=self.hp("init_std"))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.hp("lr"), weight_decay=self.hp("l2"))
        self.trained_through = -1  # last period the model has been trained on
        self.pretrain_s: float | None = None
        self._index: tuple[int, UserIndex] | None = None

    def train_loop(self, n: int, epochs: int, batch_size: int, generator: torch.Generator, loss_fn,
                   progress: tuple[float, float] = (0.0, 1.0)) -> float:
        """``epochs`` shuffled passes over n examples; ``loss_fn(batch_idx, generator)`` returns the
        batch loss. Returns the last epoch's mean loss (nan when there is nothing to train on)."""
        if n == 0 or epochs <= 0:
            return float("nan")
        dev = self.ctx.device
        per_epoch = -(-n // batch_size)
        total_batches, done = epochs * per_epoch, 0
        lo_f, hi_f = progress
        self.model.train()
        last = torch.zeros((), device=dev)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator, device=dev)
            total = torch.zeros((), device=dev)
            for lo in range(0, n, batch_size):
                loss = loss_fn(perm[lo:lo + batch_size], generator)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.detach()
                done += 1
                self.report(lo_f + (hi_f - lo_f) * done / total_batches)
            last = total / per_epoch
        self.model.eval()
        value = float(last)
        if not math.isfinite(value):
            raise FloatingPointError(f"{self.kind} training loss became {value}")
        return value

    def history_before(self, cases, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` interactions of each case's user with an earlier time than the case (and
        their number). Interactions of the same time are not "before": their order in the stream is
        the file's, not the user's (MovieLens rates many items within one second)."""
        positions = cases.positions[rows]
        times = self.ctx.dataset.times
        first_of_time = np.searchsorted(times, times[positions], "left")  # the stream is sorted by time
        return self.history_index(cases).previous(positions, n, before=first_of_time)

    def history_index(self, cases) -> UserIndex:
        """Stream positions up to the last case of the set, grouped by user (cached per case set)."""
        end = int(cases.positions.max()) + 1 if len(cases.positions) else 0
        if self._index is None or self._index[0] != end:
            self._index = (end, UserIndex(self.ctx.dataset.users[:end]))
        return self._index[1]

    def seen(self) -> tuple[int, int]:
        """(items, users) seen up to the last period trained on: the rows the model has trained."""
        t = self.trained_through
        if t < 0:
            return 0, 0
        return self.ctx.n_items_seen(t), self.ctx.n_users_seen(t)

    @staticmethod
    def rank_unseen_last(scores: torch.Tensor, n_seen: int) -> torch.Tensor:
        if n_seen < scores.shape[1]:
            floor = scores[:, :n_seen].amin(1, keepdim=True) - 1.0 if n_seen > 0 else 0.0
            scores[:, n_seen:] = floor
        return scores

    def first_facts(self) -> dict:
        if self.pretrain_s is None:
            return {}
        facts, self.pretrain_s = {"pretrain_s": round(self.pretrain_s, 3)}, None
        return facts

    def state_dict(self) -> dict:
        return copy.deepcopy({"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                              "trained_through": self.trained_through})

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(copy.deepcopy(state["optim"]))
        self.trained_through = int(state["trained_through"])
        self.pretrain_s = None
        self.model.eval()


class GRU4Rec(SequentialRetrainer):
    """GRU4Rec: windowed sequence training, sampled-softmax cross-entropy, full retrain each period."""

    kind = "gru4rec"
    meanings = {"hidden": "GRU state size", "emb_dim": "item embedding size",
                "max_len": "history items a sequence keeps", "dropout": "dropout on embeddings and states",
                "negatives": "sampled negatives per batch (0: full softmax over the items seen)",
                "epochs": "epochs over all history at each period", "pretrain_epochs": "epochs before the first period",
                "lr": "Adam learning rate", "l2": "weight decay", "batch_size": "sequences per step",
                "init_std": "std of the initial embeddings"}
    defaults = {"hidden": 64, "emb_dim": 64, "max_len": 50, "dropout": 0.4, "negatives": 256,
                "epochs": 2, "pretrain_epochs": 10, "lr": 0.002, "l2": 0.0, "batch_size": 64,
                "init_std": 0.1}

    def build_model(self) -> torch.nn.Module:
        return GRU4RecNet(self.ctx.dataset.n_items, self.hp("emb_dim"), self.hp("hidden"), self.hp("dropout"))

    def start(self, ctx: ReplayContext, initial=None) -> None:
        super().start(ctx)
        last = ctx.dataset.split.retrain_start - 1
        t0 = time.perf_counter()
        self.train_upto(last, self.hp("pretrain_epochs"), ctx.generator(self.name, "pretrain"))
        self.pretrain_s = time.perf_counter() - t0

    def train_upto(self, t: int, epochs: int, generator: torch.Generator) -> tuple[float, int]:
        data = self.ctx.dataset.upto(t)
        inputs, targets = gru_windows(data.users, data.items, self.hp("max_len"))
        dev = self.ctx.device
        X = torch.as_tensor(inputs, device=dev)
        Y = torch.as_tensor(targets, device=dev)
        n_seen = self.ctx.n_items_seen(t)
        k = self.hp("negatives")
        model = self.model

        def loss_fn(b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            y = Y[b]
            h = model.states(X[b], g)  # [B, N, H]
            mask = y >= 0
            yc = y.clamp(min=0)
            if k <= 0:  # full softmax over the items seen so far
                ce = F.cross_entropy(model.scores(h.flatten(0, 1), n_seen), yc.flatten(), reduction="none")
            else:
                neg = torch.randint(0, n_seen, (k,), generator=g, device=dev)
                pos = (h * model.out(yc)).sum(-1) + model.bias(yc)[..., 0]  # [B, N]
                negs = h @ model.out(neg).T + model.bias(neg)[:, 0]  # [B, N, K]
                negs = negs.masked_fill(neg == yc[..., None], float("-inf"))
                ce = torch.logsumexp(torch.cat([pos[..., None], negs], -1), -1) - pos
            mask = mask.flatten().to(h.dtype)
            return (ce.flatten() * mask).sum() / mask.sum().clamp(min=1.0)

        loss = self.train_loop(len(X), epochs, self.hp("batch_size"), generator, loss_fn)
        self.trained_through = t
        return loss, int((targets >= 0).sum())

    def fit_period(self, t, next_period=None) -> dict:
        loss, n = self.train_upto(t, self.hp("epochs"), self.ctx.generator(self.name, t))
        return {"loss": loss, "train_interactions": n, **self.first_facts()}

    @torch.no_grad()
    def score(self, cases, rows: np.ndarray, n_items: int) -> torch.Tensor:
        max_len = self.hp("max_len")
        n_seen, _ = self.seen()
        prev, count = self.history_before(cases, rows, max_len)
        hist = gather_items(self.ctx.dataset.items, prev, -1)
        hist[hist >= n_seen] = -GRU_SHIFT  # untrained item -> PAD token (unknown)
        tokens, slot = gru_score_inputs(hist, count, max_len)
        dev = self.ctx.device
        tokens, slot = torch.as_tensor(tokens, device=dev), torch.as_tensor(slot, device=dev)
        self.model.eval()
        out = []
        for lo in range(0, len(rows), SCORE_ROWS):
            tk, sl = tokens[lo:lo + SCORE_ROWS], slot[lo:lo + SCORE_ROWS]
            width = int(sl.max()) + 1
            h = self.model.states(tk[:, :width])
            out.append(self.model.scores(h[torch.arange(len(sl), device=dev), sl], n_items))
        return self.rank_unseen_last(torch.cat(out), n_seen)


class Caser(SequentialRetrainer):
    """Caser: convolutional sequence embedding, pre-trained once, fine-tuned on each new period."""

    kind = "caser"
    meanings = {"d": "embedding size", "L": "previous items the convolution reads",
                "T": "next items predicted per window", "n_v": "vertical filters", "n_h": "horizontal filters per height",
                "dropout": "dropout on the convolution outputs, before the FC layer", "neg_per_target": "sampled negatives per target",
                "epochs": "epochs on each new period", "pretrain_epochs": "epochs before the first period",
                "lr": "Adam learning rate", "l2": "weight decay", "batch_size": "windows per step",
                "init_std": "std of the initial embeddings"}
    defaults = {"d": 50, "L": 5, "T": 3, "n_v": 4, "n_h": 16, "dropout": 0.5, "neg_per_target": 3,
                "epochs": 10, "pretrain_epochs": 30, "lr": 0.001, "l2": 1e-6, "batch_size": 512,
                "init_std": 0.02}

    def build_model(self) -> torch.nn.Module:
        ds = self.ctx.dataset
        return CaserNet(ds.n_users, ds.n_items, self.hp("d"), self.hp("L"), self.hp("n_v"), self.hp("n_h"),
                        self.hp("dropout"))

    def start(self, ctx: ReplayContext, initial=None) -> None:
        super().start(ctx)
        last = ctx.dataset.split.retrain_start - 1
        t0 = time.perf_counter()
        self.train_on(last, 0, self.hp("pretrain_epochs"), ctx.generator(self.name, "pretrain"))
        self.pretrain_s = time.perf_counter() - t0

    def train_on(self, t: int, first: int, epochs: int, generator: torch.Generator) -> tuple[float, int]:
        """Train on the examples whose first target lies in periods first..t."""
        ds = self.ctx.dataset
        lo, end = int(ds.offsets[first]), int(ds.offsets[t + 1])
        positions = np.arange(lo, end, dtype=np.int64)
        L, T = self.hp("L"), self.hp("T")
        inputs, targets = caser_examples(UserIndex(ds.users[:end]), ds.items, positions, L, T)
        dev = self.ctx.device
        X = torch.as_tensor(inputs, device=dev)
        Y = torch.as_tensor(targets, device=dev)
        U = torch.as_tensor(ds.users[lo:end], device=dev)
        n_seen = self.ctx.n_items_seen(t)
        n_neg = self.hp("neg_per_target") * T
        model = self.model

        def loss_fn(b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            x = model.features(X[b], model.user_emb(U[b]), g)
            y = Y[b]
            mask = (y >= 0).to(x.dtype)
            pos = model.pair_scores(x, y.clamp(min=0))
            neg = model.pair_scores(x, torch.randint(0, n_seen, (len(b), n_neg), generator=g, device=dev))
            return (F.softplus(-pos) * mask).sum() / mask.sum().clamp(min=1.0) + F.softplus(neg).mean()

        loss = self.train_loop(len(X), epochs, self.hp("batch_size"), generator, loss_fn)
        self.trained_through = t
        return loss, len(X)

    def fit_period(self, t, next_period=None) -> dict:
        loss, n = self.train_on(t, t, self.hp("epochs"), self.ctx.generator(self.name, t))
        return {"loss": loss, "train_interactions": n, **self.first_facts()}

    @torch.no_grad()
    def score(self, cases, rows: np.ndarray, n_items: int) -> torch.Tensor:
        L = self.hp("L")
        n_seen, n_users_seen = self.seen()
        prev, _ = self.history_before(cases, rows, L)
        hist = gather_items(self.ctx.dataset.items, prev, -1)
        hist[hist >= n_seen] = -1  # untrained item -> PAD (unknown)
        dev = self.ctx.device
        tokens = torch.as_tensor(hist + CASER_SHIFT, device=dev)
        users = torch.as_tensor(cases.users[rows], device=dev)
        self.model.eval()
        out = []
        for lo in range(0, len(rows), SCORE_ROWS):
            u = users[lo:lo + SCORE_ROWS]
            uvec = self.model.user_emb(u) * (u < n_users_seen)[:, None].to(torch.float32)
            x = self.model.features(tokens[lo:lo + SCORE_ROWS], uvec)
            out.append(self.model.scores(x, n_items))
        return self.rank_unseen_last(torch.cat(out), n_seen)


register("gru4rec", GRU4Rec, {}, "GRU4Rec: GRU over each user's history, sampled-softmax CE, full retrain")
register("caser", Caser, {}, "Caser: CNN over the last L items + user embedding, fine-tuned each period")
