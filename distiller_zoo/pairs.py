"""What RepDistiller's layer-by-layer feature losses share: their list-in, list-out form and how they
bring two maps of different heights together."""
import torch.nn as nn
import torch.nn.functional as F

# AB's and OFD's connector container and the one-to-one check live with RepDistiller's modules in models/util.py
from models.util import MapwiseModules, check_one_to_one  # noqa: F401

__all__ = []


class PairwiseLoss(nn.Module):
    """Base of the criteria called on two lists of maps (``Attention``, ``NSTLoss``, ``Similarity``): one
    loss per pair, paired with ``zip`` as in RepDistiller, so surplus maps of the longer list are ignored.
    A subclass writes ``pair_loss(f_s, f_t)``."""

    def forward(self, g_s, g_t):
        return [self.pair_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def pair_loss(self, f_s, f_t):
        raise NotImplementedError


def match_height(f_s, f_t):
    """Adaptive-average-pool the taller of two maps to the other's height, as a square (RepDistiller)."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif t_h > s_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t
