"""CRD's loss (RepDistiller's crd/criterion.py): Embed heads, the memory's scores and the NCE loss.

Paper vs code: the paper's critic is h = e^{<t,s>/T} / (e^{<t,s>/T} + K/N) for K negatives and N
training images; the code first divides the exp-score by a constant Z (the partition function,
estimated once on the first batch as mean score x N) and adds eps = 1e-7 to the denominator. The
code wins.
"""
import torch
import torch.nn as nn

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .memory import BANK_DTYPES, ContrastMemory

__all__ = ['CRDLoss', 'ContrastLoss', 'Embed', 'Normalize']

eps = 1e-7


class CRDLoss(nn.Module):
    """``CRDLoss(opt)``: both directions of CRD, student anchors against the teacher bank and teacher
    anchors against the student bank.

    opt needs s_dim and t_dim (widths of the penultimate features), feat_dim (embedding width), nce_k,
    nce_t (temperature), nce_m (bank momentum) and n_data (training images = bank rows); crd_bank
    ('fp32', 'fp16', 'bf16', default fp32) is this toolbox's addition. ``forward(f_s, f_t, idx,
    contrast_idx=None)`` embeds both features (``embed_s``, ``embed_t``, both trained), scores them against
    the memory (``contrast``, which it then updates) and returns the summed NCE loss of both sides, a
    0-dim tensor (RepDistiller's has shape (1,)). idx are the batch's data-set indices, contrast_idx the
    (B, nce_k + 1) rows of the positive then the negatives (uniform draws when None).
    """

    def __init__(self, opt):
        super().__init__()
        bank = getattr(opt, 'crd_bank', 'fp32')
        if opt.feat_dim < 1:
            raise KDZooError(f"--feat_dim must be at least 1, got {opt.feat_dim}")
        if opt.nce_t <= 0:
            raise KDZooError(f"--nce_t must be positive, got {opt.nce_t}; CRD's default is 0.07")
        if not 0 <= opt.nce_m < 1:
            raise KDZooError(f"--nce_m must lie in [0, 1), got {opt.nce_m}; CRD's default is 0.5")
        if bank not in BANK_DTYPES:
            raise KDZooError(f"unknown --crd_bank '{bank}'; use one of {', '.join(BANK_DTYPES)}")
        self.embed_s = Embed(opt.s_dim, opt.feat_dim)
        self.embed_t = Embed(opt.t_dim, opt.feat_dim)
        self.contrast = ContrastMemory(opt.feat_dim, opt.n_data, opt.nce_k, opt.nce_t, opt.nce_m,
                                       bank_dtype=BANK_DTYPES[bank])
        self.criterion_t = ContrastLoss(opt.n_data)
        self.criterion_s = ContrastLoss(opt.n_data)

    def forward(self, f_s, f_t, idx, contrast_idx=None):
        if f_s.size(0) != f_t.size(0) or idx.shape != (f_s.size(0),):
            raise KDZooError(f"CRD needs one student feature, teacher feature and data-set index per sample, "
                             f"got {f_s.size(0)}, {f_t.size(0)} and index shape {tuple(idx.shape)}")
        out_s, out_t = self.contrast(self.embed_s(f_s), self.embed_t(f_t), idx, contrast_idx)
        return self.criterion_s(out_s) + self.criterion_t(out_t)


class ContrastLoss(nn.Module):
    """``ContrastLoss(n_data)(x)``: NCE loss with uniform noise Pn = 1/n_data over scores x of shape
    (B, 1 + m[, 1]), positive first: -(sum_i log(x_i0 / (x_i0 + m Pn + eps))
    + sum_ik log(m Pn / (x_ik + m Pn + eps))) / B."""

    def __init__(self, n_data):
        super().__init__()
        self.n_data = n_data

    def forward(self, x):
        batch = x.size(0)
        x = x.reshape(batch, -1)
        m = x.size(1) - 1
        noise = m / float(self.n_data)
        positive = torch.log(x[:, 0] / (x[:, 0] + noise + eps))
        negative = torch.log(noise / (x[:, 1:] + noise + eps))
        return -(positive.sum() + negative.sum()) / batch


class Embed(nn.Module):
    """``Embed(dim_in=1024, dim_out=128)``: flatten, linear, L2-normalise (the normalisation in fp32
    or wider under autocast)."""

    def __init__(self, dim_in=1024, dim_out=128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.l2norm = Normalize(2)

    def forward(self, x):
        x = self.linear(x.flatten(1))
        return self.l2norm(at_least_fp32(x))


class Normalize(nn.Module):
    """``Normalize(power=2)``: divides each row by its p-norm."""

    def __init__(self, power=2):
        super().__init__()
        self.power = power

    def forward(self, x):
        return x / x.pow(self.power).sum(1, keepdim=True).pow(1.0 / self.power)
