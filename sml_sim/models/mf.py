"""Dot-product matrix factorisation (paper eq. 12) trained with pointwise log loss (eq. 13).

score(u, i) = p_u . q_i, no biases. Training pairs every positive with one negative drawn uniformly
from the items seen so far. Updates are row-sparse: a step reads and writes only the rows of its
batch (:class:`RowAdam`, the lazy Adam of ``torch.optim.SparseAdam``), so an epoch costs in proportion
to the interactions, not to the table size. The MF gradient is written out by hand: autograd and
sparse-gradient bookkeeping cost more than the arithmetic for a model this simple.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def seeded_rows(n: int, dim: int, std: float, seed: int, table: int, block: int = 1024) -> torch.Tensor:
    """N(0, std^2) rows drawn in fixed blocks, each from its own seed: row k's values depend on
    (seed, table, k) only, never on how many rows the table has. Tables are sized for the whole
    stream, so this keeps the rows of early users and items independent of later arrivals (no
    look-ahead through the initialisation)."""
    out = torch.empty(n, dim)
    for b, lo in enumerate(range(0, n, block)):
        g = torch.Generator().manual_seed(hash((seed, table, b)) & ((1 << 62) - 1))
        out[lo:lo + block] = torch.randn(block, dim, generator=g)[: n - lo] * std
    return out


class MF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64, init_std: float = 0.1,
                 generator: torch.Generator | None = None, seed: int | None = None):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user.weight.requires_grad_(False)
        self.item.weight.requires_grad_(False)
        with torch.no_grad():
            if seed is not None:
                self.user.weight.copy_(seeded_rows(n_users, dim, init_std, seed, 0))
                self.item.weight.copy_(seeded_rows(n_items, dim, init_std, seed, 1))
            else:
                self.user.weight.normal_(0.0, init_std, generator=generator)
                self.item.weight.normal_(0.0, init_std, generator=generator)

    @property
    def P(self) -> torch.Tensor:  # noqa: N802 - the paper's notation
        return self.user.weight

    @property
    def Q(self) -> torch.Tensor:  # noqa: N802
        return self.item.weight

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.P[users] * self.Q[items]).sum(-1)


class RowAdam:
    """Adam applied lazily to the rows a step touches (the update rule of ``torch.optim.SparseAdam``).

    Duplicate rows in a batch are summed first, as a sparse gradient would be.
    """

    def __init__(self, table: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.table = table
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)
        self.steps = 0

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: torch.Tensor, unique: bool = False) -> None:
        if not unique:
            rows, inverse = torch.unique(rows, return_inverse=True)
            grads = torch.zeros(len(rows), grads.shape[1], dtype=grads.dtype, device=grads.device).index_add_(
                0, inverse, grads)
        self.steps += 1
        # index_select / index_copy_ rather than advanced indexing: ~5x faster row gathers on the
        # CPU (tables of this size do not fit in cache), with the same values.
        m = self.m.index_select(0, rows).mul_(self.b1).add_(grads, alpha=1 - self.b1)
        v = self.v.index_select(0, rows).mul_(self.b2).addcmul_(grads, grads, value=1 - self.b2)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        step_size = self.lr * (1 - self.b2 ** self.steps) ** 0.5 / (1 - self.b1 ** self.steps)
        update = step_size * m / (v.sqrt_().add_(self.eps))
        self.table.index_copy_(0, rows, self.table.index_select(0, rows).sub_(update))

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.steps = int(state["steps"])


def log_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over positives (label 1) and their sampled negatives (label 0)."""
    return 0.5 * (F.softplus(-pos_scores).mean() + F.softplus(neg_scores).mean())


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Shuffled index batches over ``n`` examples."""
    order = torch.randperm(n, generator=generator, device=device)
    for lo in range(0, n, batch_size):
        yield order[lo:lo + batch_size]


@torch.no_grad()
def mf_step(model: MF, opt_user: RowAdam, opt_item: RowAdam, u: torch.Tensor, i: torch.Tensor,
            j: torch.Tensor, l2: float) -> torch.Tensor:
    """One log-loss step on positives (u, i) with negatives j; returns the batch loss.

    loss = 0.5 * (mean softplus(-p.q_i) + mean softplus(p.q_j)) + 0.5 * l2 * (batch rows' squares) / B
    """
    b = len(u)
    pu, qi, qj = model.P.index_select(0, u), model.Q.index_select(0, i), model.Q.index_select(0, j)
    s_pos, s_neg = (pu * qi).sum(1), (pu * qj).sum(1)
    loss = log_loss(s_pos, s_neg)
    d_pos = (-0.5 / b) * torch.sigmoid(-s_pos)[:, None]
    d_neg = (0.5 / b) * torch.sigmoid(s_neg)[:, None]
    reg = l2 / b
    g_u = d_pos * qi + d_neg * qj + reg * pu
    g_items = torch.cat([d_pos * pu + reg * qi, d_neg * pu + reg * qj])
    opt_user.step(u, g_u)
    opt_item.step(torch.cat([i, j]), g_items)
    return loss


def train_mf(
    model: MF,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    n_items_seen: int,
    epochs: int,
    batch_size: int,
    lr: float,
    l2: float,
    generator: torch.Generator,
    sample_weights: torch.Tensor | None = None,
    on_batch: Callable[[float], None] | None = None,
) -> float:
    """Train ``model`` on (users, items) positives for ``epochs`` epochs; returns the last epoch's mean loss.

    A fresh Adam state per call (each retraining is a new optimisation from the warm start). L2 is
    applied to the batch's rows only (0.5 * l2 * sum of squares / B), the usual choice for sparse
    embeddings and the one of the paper's public code. ``sample_weights`` switches from shuffled
    epochs to drawing ``len(users)`` pairs per epoch with those weights (SPMF).
    """
    device = users.device
    n = len(users)
    if n == 0 or epochs <= 0:
        return float("nan")
    opt_user, opt_item = RowAdam(model.P, lr), RowAdam(model.Q, lr)
    per_epoch = (n + batch_size - 1) // batch_size
    done = 0
    last = torch.zeros((), device=device)
    for _ in range(epochs):
        if sample_weights is None:
            epoch_batches = batches(n, batch_size, generator, device)
        else:
            idx = torch.multinomial(sample_weights, n, replacement=True, generator=generator)
            epoch_batches = (idx[lo:lo + batch_size] for lo in range(0, n, batch_size))
        total = torch.zeros((), device=device)
        for b in epoch_batches:
            j = torch.randint(0, n_items_seen, (len(b),), generator=generator, device=device)
            total += mf_step(model, opt_user, opt_item, users[b], items[b], j, l2)
            done += 1
            if on_batch is not None:
                on_batch(done / (epochs * per_epoch))
        last = total / per_epoch
    value = float(last)
    if value != value:  # NaN
        raise FloatingPointError("MF training loss became NaN")
    return value
