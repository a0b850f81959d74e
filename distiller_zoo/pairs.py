"""What RepDistiller's layer-by-layer feature losses share: their list-in, list-out form and how they
bring two maps of different heights together."""
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError

__all__ = []


class PairwiseLoss(nn.Module):
    """Base of the criteria called on two lists of maps (``Attention``, ``NSTLoss``, ``Similarity``): one
    loss per pair, paired with ``zip`` as in RepDistiller, so surplus maps of the longer list are ignored.
    A subclass writes ``pair_loss(f_s, f_t)``."""

    def forward(self, g_s, g_t):
        return [self.pair_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def pair_loss(self, f_s, f_t):
        raise NotImplementedError


class MapwiseModules(nn.Module):
    """One module per map, in ``connectors``, applied to a list of maps pair by pair: ``forward(g_s)`` ->
    ``[connectors[i](g_s[i]) ...]`` (AB's and OFD's connectors; the name is their state-dict prefix)."""

    def __init__(self, connectors):
        super().__init__()
        self.connectors = nn.ModuleList(connectors)

    def forward(self, g_s):
        return [connect(f) for connect, f in zip(self.connectors, g_s)]


def match_height(f_s, f_t):
    """Adaptive-average-pool the taller of two maps to the other's height, as a square (RepDistiller)."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif t_h > s_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


def check_one_to_one(method, s_shapes, t_shapes, advice):
    """Refuse, in one line ending in ``advice``, student and teacher map lists that cannot be paired one to one
    (AB's connectors and FSP's flow matrices need a teacher map for every student map)."""
    if len(s_shapes) != len(t_shapes):
        raise KDZooError(f"{method} pairs the student's feature maps with the teacher's one to one, but the student "
                         f"has {len(s_shapes)} and the teacher {len(t_shapes)}; {advice}")
