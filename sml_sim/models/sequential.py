"""Sequential recommenders of the paper's baselines: GRU4Rec and Caser, plus the vectorised
history and training-data builders they share.

Both read a user's time-ordered interactions. :class:`UserIndex` groups the positions of a stream
prefix by user (one stable argsort), so that "the last n items of this user strictly before stream
position p" is a gather, for any number of positions at once, and never reaches p itself or later.

Token conventions (the input tables have extra rows in front of the item ids):

* GRU4Rec: ``PAD = 0``, ``BOS = 1`` (begin of a user's history), item ``i`` is token ``i + 2``.
* Caser: ``PAD = 0``, item ``i`` is token ``i + 1``.

Item *output* tables (the matrices scored against) are indexed by the plain item id.

Every random draw (initialisation, shuffles, negatives, dropout masks) takes an explicit
``torch.Generator``, so a run is reproducible and resumes identically.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GRU_PAD, GRU_BOS, GRU_SHIFT = 0, 1, 2
CASER_PAD, CASER_SHIFT = 0, 1


# ---------------------------------------------------------------- histories


class UserIndex:
    """The positions 0..len(users)-1 of a stream prefix, grouped by user and in time order.

    ``order[k]`` is the stream position of the k-th entry when sorted by (user, time); ``rank`` is its
    inverse. The entries of one user are contiguous, so the interactions of the user of position p
    that came before p are ``order[start(p):rank[p]]``.
    """

    def __init__(self, users: np.ndarray):
        users = np.asarray(users, dtype=np.int64)
        self.n = len(users)
        self.order = np.argsort(users, kind="stable").astype(np.int64)
        self.sorted_users = users[self.order]
        self.rank = np.empty(self.n, dtype=np.int64)
        self.rank[self.order] = np.arange(self.n, dtype=np.int64)
        # (user, position) as one increasing key: where a user's entries before any position start
        self._keys = self.sorted_users * max(self.n, 1) + self.order

    def bounds(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rank, first rank, end rank) of the user of each position, in the sorted order."""
        idx = self.rank[positions]
        u = self.sorted_users[idx]
        return (idx, np.searchsorted(self.sorted_users, u, side="left"),
                np.searchsorted(self.sorted_users, u, side="right"))

    def previous(self, positions: np.ndarray, n: int, before: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Stream positions of the last ``n`` interactions of each position's user strictly before it
        (``before``: strictly before that stream position instead, e.g. the first one of its time).

        Returns (matrix [len(positions), n] right-aligned, oldest first, -1 padded on the left;
        number of earlier interactions, not capped at n).
        """
        positions = np.asarray(positions, dtype=np.int64)
        idx, start, _ = self.bounds(positions)
        if before is not None:
            users = self.sorted_users[idx]
            idx = np.searchsorted(self._keys, users * max(self.n, 1) + np.asarray(before, dtype=np.int64), "left")
        count = idx - start
        k = idx[:, None] - n + np.arange(n)[None, :]
        valid = k >= np.maximum(idx - count, idx - n)[:, None]
        out = np.where(valid, self.order[np.clip(k, 0, max(self.n - 1, 0))], -1)
        return out, count

    def following(self, positions: np.ndarray, n: int) -> np.ndarray:
        """Stream positions of each position and its user's next n-1 interactions (-1 past the prefix)."""
        positions = np.asarray(positions, dtype=np.int64)
        idx, _, end = self.bounds(positions)
        k = idx[:, None] + np.arange(n)[None, :]
        return np.where(k < end[:, None], self.order[np.minimum(k, max(self.n - 1, 0))], -1)


def gather_items(items: np.ndarray, pos: np.ndarray, fill: int = -1) -> np.ndarray:
    """items[pos] where pos >= 0, ``fill`` elsewhere."""
    return np.where(pos >= 0, items[np.maximum(pos, 0)], fill)


# ---------------------------------------------------------------- small helpers


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout with an explicit generator (identity when p == 0 or generator is None)."""
    if p <= 0 or generator is None:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)


def init_module(module: nn.Module, generator: torch.Generator, std: float = 0.1) -> None:
    """Deterministic initialisation from ``generator``: embeddings N(0, std) (padding rows zero),
    biases of score tables zero, every other weight/bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the
    PyTorch default bound for GRU/Linear/Conv layers."""
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, nn.Embedding):
                if mod.embedding_dim == 1:
                    mod.weight.zero_()
                else:
                    mod.weight.normal_(0.0, std, generator=generator)
                    if mod.padding_idx is not None:
                        mod.weight[mod.padding_idx].zero_()
            elif isinstance(mod, nn.GRU):
                bound = 1.0 / math.sqrt(mod.hidden_size)
                for p in mod.parameters(recurse=False):
                    p.uniform_(-bound, bound, generator=generator)
            elif isinstance(mod, nn.Linear):
                fan_in = mod.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                mod.weight.uniform_(-bound, bound, generator=generator)
                if mod.bias is not None:
                    mod.bias.uniform_(-bound, bound, generator=generator)


# ---------------------------------------------------------------- GRU4Rec


class GRU4RecNet(nn.Module):
    """Item embedding -> one GRU layer -> hidden state scored against an item output table plus bias."""

    def __init__(self, n_items: int, emb_dim: int = 64, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        self.n_items = n_items
        self.emb = nn.Embedding(n_items + GRU_SHIFT, emb_dim, padding_idx=GRU_PAD)
        self.gru = nn.GRU(emb_dim, hidden, batch_first=True)
        self.out = nn.Embedding(n_items, hidden)
        self.bias = nn.Embedding(n_items, 1)
        self.p_drop = dropout

    def states(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Hidden state after each input token: [B, N] -> [B, N, hidden]. Dropout (on the input
        embeddings and on the states) only when a generator is given (training)."""
        x = dropout(self.emb(tokens), self.p_drop, generator)
        h, _ = self.gru(x)
        return dropout(h, self.p_drop, generator)

    def scores(self, h: torch.Tensor, n_items: int) -> torch.Tensor:
        return torch.addmm(self.bias.weight[:n_items, 0], h, self.out.weight[:n_items].T)


def gru_windows(users: np.ndarray, items: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Training windows over every user's whole history (a stream prefix), for sequence training.

    Each user's history ``BOS, i_1, ..., i_m`` is cut from its end into consecutive windows of
    ``max_len`` targets: window k predicts targets ``i_{e-max_len+1} .. i_e`` (``e = m - k*max_len``,
    clipped at 1) from the tokens just before each. The window that reaches the start begins with
    BOS, so ``i_1`` is learned from an empty history. Every interaction is a target exactly once.

    Returns (inputs [W, max_len] tokens, left-aligned, PAD on the right; targets [W, max_len] item ids,
    -1 where the slot is padding).
    """
    n = len(users)
    if n == 0:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    order = np.argsort(users, kind="stable")
    sorted_items = np.asarray(items, dtype=np.int64)[order]
    _, gstart, m = np.unique(np.asarray(users)[order], return_index=True, return_counts=True)
    g = len(m)
    gid = np.repeat(np.arange(g), m)
    ext = np.empty(n + g, dtype=np.int64)  # per user: BOS then the items, users one after another
    base = gstart + np.arange(g)
    ext[base] = GRU_BOS
    ext[np.arange(n) + gid + 1] = sorted_items + GRU_SHIFT
    n_win = -(-m // max_len)
    wg = np.repeat(np.arange(g), n_win)
    k = np.arange(len(wg)) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    e = m[wg] - k * max_len  # last target (1-based within the user)
    lo = np.maximum(e - max_len, 0)
    local = lo[:, None] + np.arange(max_len)[None, :]
    valid = local < e[:, None]
    q = base[wg][:, None] + np.minimum(local, (e - 1)[:, None])
    inputs = np.where(valid, ext[q], GRU_PAD)
    targets = np.where(valid, ext[q + 1] - GRU_SHIFT, -1)
    return inputs, targets


def gru_score_inputs(hist_items: np.ndarray, count: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Scoring inputs from right-aligned histories (``UserIndex.previous`` + items), as in training:
    a user with fewer than ``max_len`` earlier interactions gets ``BOS, items`` (no history: BOS
    alone, the learned empty-history state), otherwise the last ``max_len`` items.

    Returns (tokens [B, max_len] left-aligned, PAD on the right; slot whose state scores the case).
    """
    b = len(count)
    h = np.minimum(count, max_len)
    bos = (count < max_len).astype(np.int64)
    length = h + bos
    slot = np.arange(max_len)[None, :]
    src = (max_len - h)[:, None] + slot - bos[:, None]  # column of hist_items holding slot's item
    tokens = np.where((slot >= bos[:, None]) & (slot < length[:, None]),
                      hist_items[np.arange(b)[:, None], np.clip(src, 0, max_len - 1)] + GRU_SHIFT, GRU_PAD)
    tokens[bos.astype(bool), 0] = GRU_BOS
    return tokens, length - 1


# ---------------------------------------------------------------- Caser


class CaserNet(nn.Module):
    """Caser (Tang & Wang, WSDM 2018): vertical and horizontal convolutions over the embeddings of
    the L most recent items, a fully connected layer, concatenated with a user embedding and scored
    by an item output table plus bias (as in the authors' PyTorch code)."""

    def __init__(self, n_users: int, n_items: int, d: int = 50, L: int = 5, n_v: int = 4, n_h: int = 16,
                 dropout: float = 0.5):
        super().__init__()
        self.L, self.d = L, d
        self.item_emb = nn.Embedding(n_items + CASER_SHIFT, d, padding_idx=CASER_PAD)
        self.user_emb = nn.Embedding(n_users, d)
        # The convolutions as linear maps over shifted windows (same functions as Conv2d with
        # kernels L x 1 and h x d, much faster on CPU for these tiny shapes).
        self.conv_v = nn.Linear(L, n_v) if n_v > 0 else None
        self.conv_h = nn.ModuleList([nn.Linear(h * d, n_h) for h in range(1, L + 1)]) if n_h > 0 else None
        self.fc1 = nn.Linear(n_v * d + n_h * L, d)
        self.W2 = nn.Embedding(n_items, 2 * d)
        self.b2 = nn.Embedding(n_items, 1)
        self.p_drop = dropout

    def features(self, tokens: torch.Tensor, user_vecs: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, L] tokens and [B, d] user vectors -> [B, 2d] (dropout only with a generator)."""
        e = self.item_emb(tokens)  # [B, L, d]
        parts = []
        if self.conv_v is not None:  # n_v filters of size L x 1: [B, n_v, d]
            parts.append(self.conv_v(e.transpose(1, 2)).transpose(1, 2).flatten(1))
        if self.conv_h is not None:  # n_h filters of size h x d for h = 1..L, ReLU, max over time
            for h, lin in enumerate(self.conv_h, start=1):
                windows = torch.cat([e[:, k:self.L - h + 1 + k] for k in range(h)], 2)  # [B, L-h+1, h*d]
                parts.append(F.relu(lin(windows)).amax(1))
        o = dropout(torch.cat(parts, 1), self.p_drop, generator)
        z = F.relu(self.fc1(o))
        return torch.cat([z, user_vecs], 1)

    def scores(self, x: torch.Tensor, n_items: int) -> torch.Tensor:
        return torch.addmm(self.b2.weight[:n_items, 0], x, self.W2.weight[:n_items].T)

    def pair_scores(self, x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """x [B, 2d], items [B, K] -> [B, K]."""
        return torch.baddbmm(self.b2(items), self.W2(items), x[:, :, None])[..., 0]


def caser_examples(index: UserIndex, items: np.ndarray, positions: np.ndarray, L: int, T: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One Caser example per position (its first target): the user's L items before it (tokens,
    left-padded with PAD) and the item at the position plus the user's next T-1 items inside the
    prefix the index covers (-1 past it)."""
    prev, _ = index.previous(positions, L)
    inputs = gather_items(items, prev, -CASER_SHIFT) + CASER_SHIFT
    targets = gather_items(items, index.following(positions, T), -1)
    return inputs, targets
