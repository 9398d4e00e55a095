"""MF: the hand-written gradient equals autograd's, RowAdam is SparseAdam on the touched rows only,
and training fits a toy low-rank stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sml_sim.models.mf import MF, RowAdam, log_loss, mf_step, train_mf

pytestmark = pytest.mark.usefixtures("one_thread")


class _Recorder:
    """Stands in for RowAdam: records the (rows, grads) a step hands it."""

    def __init__(self, table):
        self.grad = torch.zeros_like(table)

    def step(self, rows, grads, unique=False):
        self.grad.index_add_(0, rows, grads)


def _autograd_loss(P, Q, u, i, j, l2):
    pu, qi, qj = P[u], Q[i], Q[j]
    b = len(u)
    loss = log_loss((pu * qi).sum(1), (pu * qj).sum(1))
    reg = 0.5 * l2 * ((pu ** 2).sum() + (qi ** 2).sum() + (qj ** 2).sum()) / b
    return loss, loss + reg


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_hand_written_gradient_equals_autograd(l2):
    g = torch.Generator().manual_seed(0)
    model = MF(12, 15, dim=6, init_std=0.5, generator=g).double()
    u = torch.tensor([0, 3, 3, 7, 11, 0, 5])  # duplicates on purpose
    i = torch.tensor([1, 1, 4, 14, 2, 9, 4])
    j = torch.tensor([4, 8, 1, 0, 2, 13, 13])  # j may repeat i's rows
    P = model.P.detach().clone().requires_grad_(True)
    Q = model.Q.detach().clone().requires_grad_(True)
    plain, total = _autograd_loss(P, Q, u, i, j, l2)
    total.backward()
    ru, ri = _Recorder(model.P), _Recorder(model.Q)
    returned = mf_step(model, ru, ri, u, i, j, l2)
    torch.testing.assert_close(ru.grad, P.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ri.grad, Q.grad, rtol=1e-10, atol=1e-12)
    # the returned batch loss is the log loss (the regulariser may or may not be included)
    assert plain.item() - 1e-12 <= returned.item() <= total.item() + 1e-12
    if l2 == 0:
        torch.testing.assert_close(returned, plain.detach())


def test_mf_step_equals_sparse_adam_steps():
    """Several mf_step calls (RowAdam) against autograd + torch.optim.SparseAdam on sparse embeddings."""
    torch.manual_seed(0)
    n_users, n_items, dim, lr, l2 = 20, 30, 5, 0.05, 0.1
    model = MF(n_users, n_items, dim=dim, init_std=0.3, generator=torch.Generator().manual_seed(1)).double()
    eu = nn.Embedding(n_users, dim, sparse=True).double()
    ei = nn.Embedding(n_items, dim, sparse=True).double()
    with torch.no_grad():
        eu.weight.copy_(model.P)
        ei.weight.copy_(model.Q)
    opt = torch.optim.SparseAdam(list(eu.parameters()) + list(ei.parameters()), lr=lr)
    ou, oi = RowAdam(model.P, lr), RowAdam(model.Q, lr)
    g = torch.Generator().manual_seed(2)
    for _ in range(6):
        u = torch.randint(0, n_users, (16,), generator=g)
        i = torch.randint(0, n_items, (16,), generator=g)
        j = torch.randint(0, n_items, (16,), generator=g)
        mf_step(model, ou, oi, u, i, j, l2)
        opt.zero_grad()
        pu, qi, qj = eu(u), ei(i), ei(j)
        loss = log_loss((pu * qi).sum(1), (pu * qj).sum(1)) + 0.5 * l2 * (
            (pu ** 2).sum() + (qi ** 2).sum() + (qj ** 2).sum()) / len(u)
        loss.backward()
        opt.step()
    torch.testing.assert_close(model.P, eu.weight.detach(), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(model.Q, ei.weight.detach(), rtol=1e-9, atol=1e-11)


def test_row_adam_touches_only_batch_rows():
    table = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    before = table.clone()
    opt = RowAdam(table, lr=0.1)
    rows = torch.tensor([3, 7, 7, 20])
    opt.step(rows, torch.ones(4, 4))
    touched = torch.zeros(50, dtype=torch.bool)
    touched[rows] = True
    assert torch.equal(table[~touched], before[~touched])
    assert not torch.isclose(table[touched], before[touched]).any()
    assert torch.count_nonzero(opt.m[~touched]) == 0 and torch.count_nonzero(opt.v[~touched]) == 0
    # duplicate rows are summed (as a sparse gradient is): row 7 got grad 2, rows 3 and 20 grad 1
    torch.testing.assert_close(opt.m[7], torch.full((4,), 0.2))
    torch.testing.assert_close(opt.m[3], torch.full((4,), 0.1))
    # a second step on other rows leaves the first rows' moments alone (lazy Adam)
    m7 = opt.m[7].clone()
    opt.step(torch.tensor([1]), torch.ones(1, 4))
    assert torch.equal(opt.m[7], m7)


def test_row_adam_state_roundtrip():
    table = torch.randn(10, 3)
    opt = RowAdam(table, lr=0.1)
    opt.step(torch.tensor([1, 2]), torch.randn(2, 3))
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state_dict().items()}
    other = RowAdam(table.clone(), lr=0.1)
    other.load_state_dict(state)
    assert other.steps == 1 and torch.equal(other.m, opt.m) and torch.equal(other.v, opt.v)


def _low_rank_stream(n_users=60, n_items=80, rank=3, per_user=25, seed=0):
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    users, items = [], []
    for u in range(n_users):
        top = np.argsort(-(U[u] @ V.T))[:15]  # each user likes 15 items
        users += [u] * per_user
        items += rng.choice(top, per_user).tolist()
    return torch.tensor(users), torch.tensor(items), U, V


def test_training_lowers_loss_and_beats_random():
    users, items, _, _ = _low_rank_stream()
    n_users, n_items = 60, 80
    g = torch.Generator().manual_seed(0)
    model = MF(n_users, n_items, dim=8, init_std=0.1, generator=torch.Generator().manual_seed(3))
    first = train_mf(model, users, items, n_items_seen=n_items, epochs=1, batch_size=64, lr=0.02, l2=0.0,
                     generator=g)
    last = train_mf(model, users, items, n_items_seen=n_items, epochs=25, batch_size=64, lr=0.02, l2=0.0,
                    generator=g)
    assert last < first - 0.15, (first, last)
    # AUC of observed pairs against uniform items: random is 0.5
    with torch.no_grad():
        pos = (model.P[users] * model.Q[items]).sum(1)
        rand_items = torch.randint(0, n_items, (len(users), 20), generator=torch.Generator().manual_seed(9))
        neg = (model.P[users][:, None, :] * model.Q[rand_items]).sum(-1)
        auc = (pos[:, None] > neg).float().mean().item()
    assert auc > 0.8, auc


def test_train_mf_is_deterministic_and_only_touches_seen_items():
    users, items, _, _ = _low_rank_stream(n_items=80)
    items = items % 50  # only items 0..49 are seen
    models = []
    for _ in range(2):
        m = MF(60, 80, dim=4, generator=torch.Generator().manual_seed(1))
        q_before = m.Q.clone()
        train_mf(m, users, items, n_items_seen=50, epochs=2, batch_size=32, lr=0.01, l2=1e-4,
                 generator=torch.Generator().manual_seed(5))
        assert torch.equal(m.Q[50:], q_before[50:]), "unseen items must not move"
        models.append(m)
    assert torch.equal(models[0].P, models[1].P) and torch.equal(models[0].Q, models[1].Q)


def test_sample_weights_draw_weighted_pairs():
    """With sample weights only pairs of positive weight are trained on."""
    users, items, _, _ = _low_rank_stream()
    m = MF(60, 80, dim=4, generator=torch.Generator().manual_seed(1))
    p_before = m.P.clone()
    w = torch.zeros(len(users))
    w[users < 10] = 1.0  # only users 0..9 are ever drawn
    train_mf(m, users, items, n_items_seen=80, epochs=2, batch_size=32, lr=0.05, l2=0.0,
             generator=torch.Generator().manual_seed(0), sample_weights=w)
    assert torch.equal(m.P[10:], p_before[10:])
    assert not torch.equal(m.P[:10], p_before[:10])


def test_nan_loss_raises():
    users, items, _, _ = _low_rank_stream()
    m = MF(60, 80, dim=4)
    with torch.no_grad():
        m.P[0] = float("nan")
    with pytest.raises(FloatingPointError):
        train_mf(m, users, items, n_items_seen=80, epochs=1, batch_size=64, lr=0.01, l2=0.0,
                 generator=torch.Generator().manual_seed(0))
