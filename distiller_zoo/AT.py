"""AT: Zagoruyko and Komodakis, "Paying More Attention to Attention" (ICLR 2017).

The paper takes a p-norm of the attention-map difference; RepDistiller (the code wins) averages its
squares over the batch and the positions, on ``feats[1:-1]`` of both networks.
"""
import torch.nn.functional as F

from helper.precision import full_precision
from .base import Distiller
from .registry import register
from .pairs import PairwiseLoss, match_height

__all__ = ['Attention', 'AT']


class Attention(PairwiseLoss):
    """RepDistiller's AT loss: ``Attention(p=2)(g_s, g_t)`` -> one loss per pair of maps.

    The attention map of a (B, C, H, W) map is the channel mean of its p-th power, flattened and
    L2-normalised per sample; the loss is the mean squared difference of the two maps. Pairs are taken
    with ``zip``, so surplus maps of the longer list are ignored, as in RepDistiller.
    """

    def __init__(self, p=2):
        super().__init__()
        self.p = p

    @full_precision
    def pair_loss(self, f_s, f_t):
        f_s, f_t = match_height(f_s, f_t)
        return (self.at(f_s) - self.at(f_t)).pow(2).mean()

    at_loss = pair_loss  # RepDistiller's name

    def at(self, f):
        return F.normalize(f.pow(self.p).mean(1).flatten(1))


@register('attention')
class AT(Distiller):
    """Match the attention maps of ``feats[1:-1]`` (post-ReLU stage outputs); the loss is their sum."""
    needs_feats = True
    default_weights = (1.0, 0.0, 1000.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = Attention(p=2)

    def method_loss(self, out_s, out_t, batch, epoch):
        return sum(self.criterion(out_s.feats[1:-1], out_t.feats[1:-1]))
