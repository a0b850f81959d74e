"""NST: Huang and Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (2017).

RepDistiller's form (the code wins): squared MMD with the polynomial kernel k(x, y) = (x.y)^2 between the
L2-normalised spatial activation vectors of the channels, on ``feats[1:-1]``, the taller map pooled.
"""
import torch
import torch.nn.functional as F

from helper.precision import full_precision
from .base import Distiller
from .registry import register
from .pairs import PairwiseLoss, match_height

__all__ = ['NSTLoss', 'NST']


class NSTLoss(PairwiseLoss):
    """RepDistiller's NST loss: ``NSTLoss()(g_s, g_t)`` -> one loss per pair of maps.

    Per pair: mean k(t, t') (detached) + mean k(s, s') - 2 mean k(s, t), the means over the batch and all
    channel pairs. The kernels are batched matrix products, which gives RepDistiller's value without its
    (B, C, C, HW) intermediate. Pairs are taken with ``zip``, as in RepDistiller.
    """

    @full_precision
    def pair_loss(self, f_s, f_t):
        f_s, f_t = match_height(f_s, f_t)
        f_s = F.normalize(f_s.flatten(2), dim=2)
        f_t = F.normalize(f_t.flatten(2), dim=2)
        return (self.poly_kernel(f_t, f_t).mean().detach() + self.poly_kernel(f_s, f_s).mean()
                - 2 * self.poly_kernel(f_s, f_t).mean())

    nst_loss = pair_loss  # RepDistiller's name

    @staticmethod
    def poly_kernel(a, b):
        """(B, C_a, C_b) squared dot products of every channel vector of ``a`` with every one of ``b``."""
        return torch.bmm(a, b.transpose(1, 2)).pow(2)


@register('nst')
class NST(Distiller):
    """Neuron selectivity transfer on ``feats[1:-1]``; the loss is the sum over the pairs."""
    needs_feats = True
    default_weights = (1.0, 0.0, 50.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = NSTLoss()

    def method_loss(self, out_s, out_t, batch, epoch):
        return sum(self.criterion(out_s.feats[1:-1], out_t.feats[1:-1]))
