"""KDSVD: Lee, Kim and Song, "Self-supervised Knowledge Distillation Using Singular Value
Decomposition" (ECCV 2018), as RepDistiller ports the authors' TensorFlow code.

Each map of feats[1:-1] is read as a (H*W, C) matrix per sample; its leading right singular vectors
(channel space), scaled by the teacher's normalised singular values, are compared between
consecutive layers through Gaussian (RBF) kernels, and the student's kernels are regressed onto the
teacher's. This is RepDistiller's port, followed exactly (the code wins; how it departs from the
paper was not checked). RepDistiller's script has no weight for it: the default here is beta = 1,
a choice, not a published value.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .base import Distiller
from .registry import register

__all__ = ['KDSVD', 'KDSVDDistiller']


class KDSVD(nn.Module):
    """``KDSVD(k=1)(g_s, g_t)``: a list with one loss per consecutive pair of layers (len(g) - 1 terms).

    Per layer: the teacher keeps k right singular vectors, the student k + 3, each student vector is
    replaced by the sign-matched student vector of largest |cosine| with it (so channel counts must
    match), both are scaled by the teacher's normalised singular values; with the previous layer's
    vectors, rbf = exp(-(v_l[i] - v_{l-1}[j])^2 / 8) for every channel pair, and the term is
    sum((rbf_s - rbf_t)^2) / B with non-finite entries set to 0. The teacher's singular-vector signs
    are LAPACK's (the loss depends on them, as in the original).
    """

    def __init__(self, k=1):
        super().__init__()
        if k < 1:
            raise KDZooError(f"KDSVD needs at least one singular vector, got k={k}")
        self.k = k

    def forward(self, g_s, g_t):
        for f_s, f_t in zip(g_s, g_t):
            if f_s.dim() != 4 or f_t.dim() != 4 or f_s.size(1) != f_t.size(1):
                raise KDZooError(f"KDSVD compares student and teacher maps with equal channel counts, got "
                                 f"{tuple(f_s.shape)} and {tuple(f_t.shape)}; use a pair whose stages have "
                                 f"the same widths (e.g. resnet32x4 -> resnet8x4)")
        losses = []
        previous = None
        with torch.autocast(g_s[0].device.type, enabled=False):
            for f_s, f_t in zip(g_s, g_t):
                s_t, v_t = self.svd(at_least_fp32(f_t), self.k)
                _, v_s = self.svd(at_least_fp32(f_s), self.k + 3)
                v_s = self.align_rsv(v_s, v_t)
                scale = s_t.unsqueeze(1)
                v_t, v_s = v_t * scale, v_s * scale
                if previous is not None:
                    rbf_s = torch.exp(-(v_s.unsqueeze(2) - previous[0].unsqueeze(1)).pow(2) / 8)
                    rbf_t = torch.exp(-(v_t.unsqueeze(2) - previous[1].unsqueeze(1)).pow(2) / 8)
                    diff = (rbf_s - rbf_t.detach()).pow(2)
                    losses.append(torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff)).sum())
                previous = v_s, v_t
        return [loss / g_s[0].size(0) for loss in losses]

    @staticmethod
    def svd(feat, n):
        """Normalised leading n singular values (B, n) and right singular vectors (B, C, n) of each sample's
        (H*W, C) matrix; non-finite entries are zeroed first."""
        x = feat.flatten(2).transpose(1, 2)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        s = torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
        v = torch.nan_to_num(vh.transpose(1, 2), nan=0.0, posinf=0.0, neginf=0.0)
        return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)

    @staticmethod
    def align_rsv(a, b):
        """Columns of a matched to those of b: for each column of b, the sign-corrected column of a
        whose |cosine| with it is largest."""
        cosine = a.transpose(1, 2) @ b
        best = cosine.abs().amax(dim=1, keepdim=True)
        mask = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
        return a @ mask


@register('kdsvd')
class KDSVDDistiller(Distiller):
    """RepDistiller's ``kdsvd`` on feats[1:-1] (unequal lists pair their first layers, as its zip does);
    ``-a 0 -b 1`` by choice: RepDistiller publishes no weight for it."""
    needs_feats = True
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        pairs = list(zip(probe_s.feats[1:-1], probe_t.feats[1:-1]))
        if len(pairs) < 2:
            raise KDZooError(f"kdsvd relates consecutive layers and needs at least 2 intermediate feature maps "
                             f"in both networks, got {len(pairs)}; pick models with more stages")
        widths = [(s.size(1), t.size(1)) for s, t in pairs]
        if any(s != t for s, t in widths):
            raise KDZooError(f"kdsvd needs equal student and teacher channel counts at every stage, got "
                             f"{[s for s, _ in widths]} and {[t for _, t in widths]}; use a pair with the same "
                             f"stage widths (e.g. resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2)")
        self.criterion = KDSVD()

    def method_loss(self, out_s, out_t, batch, epoch):
        return sum(self.criterion(out_s.feats[1:-1], out_t.feats[1:-1]))
