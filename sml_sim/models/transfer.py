"""Transfer networks f_Theta(w_prev, w_hat) -> w_new of SML (paper section 3.2).

Each network maps one parameter row pair to a new row and is shared over all rows of a group
(one network for user rows, one for item rows, paper 3.4): inputs are two float tensors
[B, d] (B rows of W_{t-1} and W_hat_t), the output is [B, d] (rows of W_t, eq. 3).

``CNNTransfer`` is the paper's design, eqs. (4)-(7):

    H0 = [w_prev; w_hat; w_prev * w_hat / (||w_prev||_2 + eps)]        (4)   3 x d
    H1_{j,m} = GELU(<F1_j, H0_{:,m}>)                                   (5)   n1 x d
    H2 = GELU(F2 H1)   (n2 filters of size n1 x 1, "formulated similarly")    n2 x d
    z = GELU(W_f^T flatten(H2) + b1)                                    (6)   d_f
    w_new = W_o^T z + b2                                                (7)   d

with Theta = {F1, F2, W_f, b1, W_o, b2} (no conv bias). The vertical "convolutions" only mix
channels at each of the d columns, so each is one matrix product over all B*d columns; that is
much faster on CPU than nn.Conv2d with a 3x1 kernel (tests/test_transfer.py checks the two agree).
On the CPU, ``fused.py``'s compiled kernel does the conv layers a row at a time instead (and the FC
GELU keeps its derivative); ``fused = False`` on a network, or SML_SIM_FUSED=0, keeps the ATen ops.

``WeightedSumTransfer`` and ``MLPTransfer`` are the alternatives of section 3.2 that the
ablations need; ``use_conv=False`` / ``use_fc=False`` give SML-CNN / SML-FC (section 4.4).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sml_sim.models import fused

__all__ = [
    "CNNTransfer",
    "WeightedSumTransfer",
    "MLPTransfer",
    "TRANSFER_KINDS",
    "build_transfer",
    "first_layer_filters",
    "transfer_flops_per_row",
    "apply_in_chunks",
    "conv_layers_aten",
]


def _check_rows(w_prev: torch.Tensor, w_hat: torch.Tensor, dim: int) -> None:
    if w_prev.dim() != 2 or w_prev.shape != w_hat.shape or w_prev.shape[1] != dim:
        raise ValueError(
            f"transfer expects w_prev and w_hat of shape [B, {dim}], got "
            f"{tuple(w_prev.shape)} and {tuple(w_hat.shape)}"
        )


class CNNTransfer(nn.Module):
    """The SML transfer: stack layer, vertical conv layers, FC layer and linear output (eqs. 4-7).

    Args:
        dim: row size d.
        n1: filters of the first conv layer (each 3 x 1).
        n2: filters of every further conv layer (each (previous channels) x 1).
        conv_layers: number of conv layers; 2 is the paper's default (3 -> n1 -> n2), 1 keeps only
            the first, k > 2 adds more n2-filter layers (paper 4.4.2).
        fc_size: d_f, the FC layer size of eq. (6).
        use_conv: False drops all conv layers and flattens H0 (3d) into the FC part (SML-CNN).
        use_fc: False drops the FC hidden layer: flatten -> Linear(C*d, d) (SML-FC).
        eps: the epsilon of eq. (4).
        detach_product: the product row of H0 uses ``w_hat.detach()``, as the authors' code does,
            so gradients reach w_hat only through its own row; False lets them flow through the
            product row too (the paper's eq. 4 read literally).

    Parameters are named ``conv.0`` (F1, [n1, 3]), ``conv.1`` (F2, [n2, n1]), ..., ``fc``
    (W_f, b1) and ``out`` (W_o, b2). Default PyTorch init throughout (conv filters get
    nn.Conv2d's default, which for these shapes is nn.Linear's). At d=64 the default network has
    30 + 50 + (320*512 + 512) + (512*64 + 64) = 197,264 parameters.
    """

    def __init__(self, dim: int, n1: int = 10, n2: int = 5, conv_layers: int = 2, fc_size: int = 512,
                 use_conv: bool = True, use_fc: bool = True, eps: float = 1e-15,
                 detach_product: bool = True):
        super().__init__()
        if dim < 1 or n1 < 1 or n2 < 1 or fc_size < 1:
            raise ValueError("dim, n1, n2 and fc_size must be positive")
        if use_conv and conv_layers < 1:
            raise ValueError("conv_layers must be >= 1 when use_conv is True (use_conv=False for none)")
        self.dim, self.n1, self.n2 = dim, n1, n2
        self.conv_layers = conv_layers if use_conv else 0
        self.fc_size = fc_size
        self.use_conv, self.use_fc = use_conv, use_fc
        self.eps, self.detach_product = eps, detach_product
        self.fused = True  # use the compiled conv kernel on the CPU when it is available

        # Filters stored as [out_channels, in_channels]; the kernel width is 1.
        self.conv = nn.ParameterList()
        channels = 3
        for k in range(self.conv_layers):
            out = n1 if k == 0 else n2
            weight = nn.Parameter(torch.empty(out, channels))
            # nn.Conv2d's default init; fan_in = in_channels * 1 * 1 (or 1 * 3 * 1 for F1).
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            self.conv.append(weight)
            channels = out
        self.channels = channels  # channels of the flattened conv output (3 without conv)
        flat = channels * dim
        if use_fc:
            self.fc: nn.Linear | None = nn.Linear(flat, fc_size)
            self.out = nn.Linear(fc_size, dim)
        else:
            self.fc = None
            self.out = nn.Linear(flat, dim)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n1={self.n1}, n2={self.n2}, conv_layers={self.conv_layers}, "
                f"fc_size={self.fc_size}, use_conv={self.use_conv}, use_fc={self.use_fc}, "
                f"detach_product={self.detach_product}")

    def stack(self, w_prev: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
        """H0 of eq. (4), returned channel-outer as [3, B, d] (see ``forward``)."""
        other = w_hat.detach() if self.detach_product else w_hat
        norm = torch.linalg.vector_norm(w_prev, dim=1, keepdim=True)
        return torch.stack([w_prev, w_hat, w_prev * other / (norm + self.eps)])

    def forward(self, w_prev: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
        _check_rows(w_prev, w_hat, self.dim)
        # On the CPU the conv layers and the FC GELU run in the fused kernel (fused.py), same function.
        # Otherwise feature maps, logically [B, C, d], are kept in memory as [C, B*d]: a vertical
        # convolution (eq. 5) is then a single GEMM [C_out, C_in] @ [C_in, B*d] with no copies,
        # and GELU runs on contiguous memory.
        h = self.stack(w_prev, w_hat)
        use_kernel = self.fused and fused.usable_for(h, self.conv)
        if len(self.conv) and use_kernel:
            h = fused.fused_conv(h, self.conv)  # the same layers in one pass per row, see fused.py
        else:
            h = conv_layers_aten(h, self.conv)
        if self.fc is not None:
            h = (fused.gelu if use_kernel else F.gelu)(self.fc(h))  # eq. (6)
        return self.out(h)  # eq. (7), no output activation

    def flops_per_row(self) -> int:
        """Multiply-adds per row of the forward pass (conv and linear layers only)."""
        macs, channels = 0, 3
        for weight in self.conv:
            macs += weight.shape[0] * channels * self.dim
            channels = weight.shape[0]
        flat = channels * self.dim
        if self.fc is not None:
            macs += flat * self.fc_size + self.fc_size * self.dim
        else:
            macs += flat * self.dim
        return macs


def conv_layers_aten(h0: torch.Tensor, weights) -> torch.Tensor:
    """The conv layers as ATen ops: stacked [3, B, d] -> [B, C_last * d] (what fused_conv computes).

    A GEMM and a GELU per layer on [C, B*d] maps, then the channel-major flatten of each row's
    C x d map (flatten(H2) of eq. 6)."""
    rows, dim = h0.shape[1], h0.shape[2]
    h = h0.reshape(3, -1)
    for weight in weights:
        h = F.gelu(torch.mm(weight, h))
    channels = h.shape[0]
    return h.view(channels, rows, dim).transpose(0, 1).reshape(rows, channels * dim)


class WeightedSumTransfer(nn.Module):
    """w_new = alpha * w_prev + (1 - alpha) * w_hat (paper 3.2, first alternative).

    With ``learn_alpha`` the weight is sigmoid(logit), a learned scalar initialised to give ``alpha``
    (the sigmoid keeps it in (0, 1)); otherwise ``alpha`` is a fixed constant.
    """

    def __init__(self, dim: int, alpha: float = 0.5, learn_alpha: bool = False):
        super().__init__()
        self.dim, self.learn_alpha = dim, learn_alpha
        if learn_alpha:
            if not 0.0 < alpha < 1.0:
                raise ValueError(f"a learned alpha must start strictly inside (0, 1), got {alpha}")
            self.logit = nn.Parameter(torch.tensor(math.log(alpha / (1.0 - alpha))))
        else:
            self.fixed_alpha = float(alpha)

    @property
    def alpha(self) -> float:
        return float(torch.sigmoid(self.logit.detach())) if self.learn_alpha else self.fixed_alpha

    def forward(self, w_prev: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
        _check_rows(w_prev, w_hat, self.dim)
        a = torch.sigmoid(self.logit) if self.learn_alpha else self.fixed_alpha
        return a * w_prev + (1 - a) * w_hat

    def flops_per_row(self) -> int:
        return 2 * self.dim


class MLPTransfer(nn.Module):
    """w_new = MLP(w_prev || w_hat): Linear(2d, hidden) -> GELU -> Linear(hidden, d) (paper 3.2)."""

    def __init__(self, dim: int, hidden: int = 512):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.fc = nn.Linear(2 * dim, hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, w_prev: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
        _check_rows(w_prev, w_hat, self.dim)
        return self.out(F.gelu(self.fc(torch.cat([w_prev, w_hat], dim=1))))

    def flops_per_row(self) -> int:
        return 2 * self.dim * self.hidden + self.hidden * self.dim


TRANSFER_KINDS: dict[str, type[nn.Module]] = {
    "cnn": CNNTransfer,
    "weighted-sum": WeightedSumTransfer,
    "mlp": MLPTransfer,
}


def build_transfer(kind: str, dim: int, **params) -> nn.Module:
    """Build a transfer by name: "cnn", "weighted-sum" or "mlp"; ``params`` go to its constructor."""
    try:
        cls = TRANSFER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown transfer kind {kind!r}; expected one of {sorted(TRANSFER_KINDS)}") from None
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "dim")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for transfer {kind!r}; allowed: {allowed}")
    return cls(dim, **params)


def first_layer_filters(module: nn.Module) -> np.ndarray | None:
    """The learned first-layer filters F1 as an [n1, 3] array (columns: w_prev, w_hat, product),
    as plotted in the paper's Figure 7; None for a transfer without conv layers."""
    if isinstance(module, CNNTransfer) and len(module.conv) > 0:
        return module.conv[0].detach().cpu().numpy().copy()
    return None


def transfer_flops_per_row(module: nn.Module) -> int:
    """Multiply-adds per row of the forward pass: matrix products only (the conv layers count as
    channel mixes), elementwise work (norm, product, GELU) excluded. A training step (forward,
    gradient of the input and of the weights) costs about three times this."""
    if not hasattr(module, "flops_per_row"):
        raise TypeError(f"not a transfer network: {type(module).__name__}")
    return int(module.flops_per_row())


def apply_in_chunks(module: nn.Module, w_prev: torch.Tensor, w_hat: torch.Tensor,
                    chunk: int = 4096) -> torch.Tensor:
    """W_t = f(W_{t-1}, W_hat_t) for a whole table, without autograd, ``chunk`` rows at a time.

    The default CNN keeps up to ~1.3k floats of feature maps alive per row. Chunks of a few
    thousand rows keep them in cache: on a 2-core AVX-512 CPU, 4096-row chunks ran about twice as
    fast as 65536-row ones (which also need ~0.35 GB of scratch memory per chunk)."""
    if w_prev.shape != w_hat.shape or w_prev.dim() != 2:
        raise ValueError(f"expected two [N, d] tensors, got {tuple(w_prev.shape)} and {tuple(w_hat.shape)}")
    if chunk < 1:
        raise ValueError("chunk must be positive")
    out = torch.empty_like(w_prev)
    with torch.no_grad():
        for lo in range(0, w_prev.shape[0], chunk):
            out[lo:lo + chunk] = module(w_prev[lo:lo + chunk], w_hat[lo:lo + chunk])
    return out
