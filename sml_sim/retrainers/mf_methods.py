"""The MF baselines of the paper (4.1.2): Full-retrain, Fine-tune and SPMF, plus the shared
pre-training that gives every MF method the same initial model."""

from __future__ import annotations

import copy

import numpy as np
import torch

from sml_sim.models.mf import MF, train_mf
from sml_sim.retrainers.base import ReplayContext, Retrainer


def mf_scores(P: torch.Tensor, Q: torch.Tensor, cases, rows: np.ndarray, n_items: int,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Dot-product scores of the cases' users against items 0..n_items-1 (rows are contiguous)."""
    users = cases.tensor("users", P.device)[int(rows[0]):int(rows[-1]) + 1]
    return torch.mm(P[users], Q[:n_items].T, out=out)


def mf_user_scores(P: torch.Tensor, Q: torch.Tensor, users: torch.Tensor, n_items: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Dot-product scores of the given users against items 0..n_items-1 (evaluation's per-user path)."""
    return torch.mm(P.index_select(0, users), Q[:n_items].T, out=out)


# A scenario's [pretrain] settings, with their defaults.
PRETRAIN_DEFAULTS = {"dim": 64, "init_std": 0.1, "epochs": 20, "batch_size": 1024, "lr": 0.01, "l2": 1e-7}


def pretrain_mf(ctx: ReplayContext, params: dict) -> MF:
    """The initial MF W_{start-1}: trained on periods 0..retrain_start-1, shared by all MF methods."""
    ds = ctx.dataset
    p = {**PRETRAIN_DEFAULTS, **params}
    model = MF(ds.n_users, ds.n_items, int(p["dim"]), float(p["init_std"]), seed=ctx.seed).to(ctx.device)
    last = ds.split.retrain_start - 1
    users, items = ctx.tensors(ds.upto(last))
    train_mf(model, users, items, n_items_seen=ctx.n_items_seen(last),
             epochs=int(p["epochs"]), batch_size=int(p["batch_size"]), lr=float(p["lr"]), l2=float(p["l2"]),
             generator=ctx.generator("pretrain"),
             on_batch=lambda f: (ctx.check(), ctx.progress and ctx.progress("pretrain", f)))
    return model


class MFRetrainer(Retrainer):
    """Holds an MF model and scores with it: one matrix product per chunk of cases."""

    needs_initial_mf = True
    defaults: dict = {}
    meanings = {"epochs": "passes over its training data per period (0: the model stays as it is)",
                "lr": "Adam learning rate", "l2": "L2 on the batch's rows (0: none)",
                "batch_size": "interactions per step",
                "reservoir": "past positives kept and replayed with each new period"}

    def start(self, ctx: ReplayContext, initial=None) -> None:
        super().start(ctx)
        self.model = copy.deepcopy(initial)

    def hp(self, key: str):
        return type(self.defaults[key])(self.params.get(key, self.defaults[key]))

    def train_on(self, t: int, users: torch.Tensor, items: torch.Tensor, **kw) -> float:
        return train_mf(
            self.model, users, items, n_items_seen=self.ctx.n_items_seen(t), epochs=self.hp("epochs"),
            batch_size=self.hp("batch_size"), lr=self.hp("lr"), l2=self.hp("l2"),
            generator=self.ctx.generator(self.name, t), on_batch=self.report, **kw,
        )

    scores_into_buffer = True

    @torch.no_grad()
    def score(self, cases, rows: np.ndarray, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return mf_scores(self.model.P, self.model.Q, cases, rows, n_items, out)

    @torch.no_grad()
    def score_users(self, users: torch.Tensor, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores depend on the user only, so evaluation scores each distinct user once."""
        return mf_user_scores(self.model.P, self.model.Q, users, n_items, out)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


class FullRetrain(MFRetrainer):
    """Train on D_0..D_t every period, warm-started from the previous period's model."""

    kind = "full"
    defaults = {"epochs": 20, "lr": 0.01, "l2": 1e-7, "batch_size": 1024}

    def fit_period(self, t, next_period=None) -> dict:
        users, items = self.ctx.tensors(self.ctx.dataset.upto(t))
        return {"loss": self.train_on(t, users, items), "train_interactions": len(users)}


class FineTune(MFRetrainer):
    """Train on D_t only, starting from the previous period's model."""

    kind = "fine"
    defaults = {"epochs": 5, "lr": 0.01, "l2": 0.0, "batch_size": 64}

    def fit_period(self, t, next_period=None) -> dict:
        users, items = self.ctx.tensors(self.ctx.dataset.period(t))
        return {"loss": self.train_on(t, users, items), "train_interactions": len(users)}


class SPMF(MFRetrainer):
    """SPMF (Wang et al., SIGIR 2018): a reservoir of past positives replayed with the new data.

    Each period: W = R + D_t; every pair of W is scored with the current model and ranked by
    descending score; training pairs are drawn with probability proportional to exp(rank / |W|),
    so badly fitted pairs (low score, high rank) are up to e times likelier. Then R is updated
    with D_t by reservoir sampling (Algorithm R): the k-th positive of the stream is kept with
    probability |R| / k, replacing a uniformly chosen slot.
    """

    kind = "spmf"
    defaults = {"epochs": 5, "lr": 0.01, "l2": 1e-7, "batch_size": 256, "reservoir": 15000}

    def start(self, ctx, initial=None) -> None:
        super().start(ctx, initial)
        cap = self.hp("reservoir")
        self.res_users = np.empty(0, dtype=np.int64)
        self.res_items = np.empty(0, dtype=np.int64)
        self.seen = 0
        pre = ctx.dataset.upto(ctx.dataset.split.retrain_start - 1)
        self.update_reservoir(pre.users, pre.items, np.random.default_rng([ctx.seed, 31, cap]))

    def update_reservoir(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> None:
        cap = self.hp("reservoir")
        n = len(users)
        k = self.seen + np.arange(1, n + 1)  # 1-based position of each new positive in the stream
        fill = max(0, min(n, cap - len(self.res_users)))
        self.res_users = np.concatenate([self.res_users, users[:fill]])
        self.res_items = np.concatenate([self.res_items, items[:fill]])
        rest = np.arange(fill, n)
        keep = rest[rng.random(len(rest)) < cap / k[rest]]
        slots = rng.integers(0, cap, size=len(keep))
        # Later positives overwrite earlier ones that drew the same slot, as in the sequential algorithm.
        last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
        self.res_users[slots[last]] = users[keep[last]]
        self.res_items[slots[last]] = items[keep[last]]
        self.seen += n

    def fit_period(self, t, next_period=None) -> dict:
        period = self.ctx.dataset.period(t)
        dev = self.ctx.device
        users = torch.as_tensor(np.concatenate([self.res_users, period.users]), device=dev)
        items = torch.as_tensor(np.concatenate([self.res_items, period.items]), device=dev)
        with torch.no_grad():
            scores = (self.model.user.weight[users] * self.model.item.weight[items]).sum(-1)
        rank = torch.empty_like(scores)
        rank[torch.argsort(scores, descending=True)] = torch.arange(len(scores), device=dev, dtype=scores.dtype)
        weights = torch.exp(rank / len(scores))
        loss = self.train_on(t, users, items, sample_weights=weights)
        self.update_reservoir(period.users, period.items, np.random.default_rng([self.ctx.seed, 37, t]))
        return {"loss": loss, "train_interactions": len(users), "reservoir": len(self.res_users)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "res_users": self.res_users.copy(), "res_items": self.res_items.copy(),
                "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.res_users, self.res_items, self.seen = state["res_users"], state["res_items"], state["seen"]


class MostPopular(Retrainer):
    """Scores items by their interaction count in the last period: a reference every table shows."""

    kind = "pop"

    def start(self, ctx, initial=None) -> None:
        super().start(ctx)
        self.counts = torch.zeros(ctx.dataset.n_items, device=ctx.device)

    def fit_period(self, t, next_period=None) -> dict:
        _, items = self.ctx.tensors(self.ctx.dataset.period(t))
        self.counts = torch.bincount(items, minlength=self.ctx.dataset.n_items).float()
        return {}

    def score(self, cases, rows, n_items):
        return self.counts[:n_items].expand(len(rows), n_items).clone()

    def score_users(self, users: torch.Tensor, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The same scores for every user: evaluation scores each distinct user once."""
        if out is None:
            return self.score(None, users, n_items)
        return out.copy_(self.counts[:n_items].expand(len(users), n_items))

    def state_dict(self) -> dict:
        return {"counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].to(self.ctx.device)


class NewItemsFirst(Retrainer):
    """Ranks items first seen in the scored period above all others, at random among themselves: a
    probe of the sampled protocol, not a recommender.

    It uses nothing from the scored period t+1 (only which ids were seen by the end of t). But the
    protocol's candidates are the items seen by the end of t+1, so the new items among them are
    exactly those someone interacts with in t+1; where most positives are new items (news), this
    alone gets a high sampled Recall@20 while its full-ranking Recall@20 stays low (README).
    """

    kind = "fresh"

    def fit_period(self, t, next_period=None) -> dict:
        self.n_seen = self.ctx.n_items_seen(t)
        return {}

    def score(self, cases, rows, n_items):
        return self.score_users(torch.as_tensor(rows), n_items)

    def score_users(self, users: torch.Tensor, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        vec = (torch.arange(n_items, device=self.ctx.device) >= self.n_seen).float().expand(len(users), n_items)
        return vec.clone() if out is None else out.copy_(vec)

    def state_dict(self) -> dict:
        return {"n_seen": self.n_seen}

    def load_state_dict(self, state: dict) -> None:
        self.n_seen = state["n_seen"]


class RandomScores(Retrainer):
    """Uniform random scores: Recall@20 over 1000 candidates should come out near 0.02.

    One random score vector per chunk of cases (or block of users), shared by the chunk: each
    case's positive still ranks uniformly among its candidates, at a fraction of the cost of a full
    random matrix.
    """

    kind = "random"

    def fit_period(self, t, next_period=None) -> dict:
        self.t = t
        return {}

    def score(self, cases, rows, n_items):
        g = self.ctx.generator(self.name, cases.period, int(rows[0]))
        return torch.rand(n_items, generator=g, device=self.ctx.device).expand(len(rows), n_items).clone()

    def score_users(self, users: torch.Tensor, n_items: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The same: one vector per block of users, seeded by the evaluated period and the block's
        first user, so evaluation takes the cheaper per-user path."""
        g = self.ctx.generator(self.name, self.t + 1, "users", int(users[0]))
        vec = torch.rand(n_items, generator=g, device=self.ctx.device).expand(len(users), n_items)
        return vec.clone() if out is None else out.copy_(vec)
