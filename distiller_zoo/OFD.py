"""OFD: Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019), as mdistiller runs it.

Both networks' pre-ReLU stage maps feats[1:-1] are used (the deepest ones when the stage counts
differ). Each student map goes through a connector (1x1 conv + BN) to the teacher's width; the teacher's
map is average-pooled to the student's size. The teacher's values below a per-channel margin m are
treated as "anything at or below m": with mu and s the bias and |weight| of the teacher BN in front of
the ReLU, m = mu - s * pdf(mu / s) / cdf(-mu / s), the mean of a N(mu, s^2) value given that it is
negative (-3s when cdf(-mu / s) <= 1e-3). The partial L2 distance skips student values already at or
below a non-positive target. Stage i of n is weighted 1 / 2^(n - 1 - i); CE 1 + 0.001 * OFD (ImageNet
0.0001), as mdistiller's cfg.py and configs.

Differences from the official code: the original OFD code and mdistiller put the teacher in train mode
(its BN normalises with batch statistics and updates its running averages while distilling); here the
teacher stays in eval mode, as for every method. mdistiller indexes its margins from the teacher's
first stage even when the teacher has more stages than the student; here they follow the paired stages.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .base import Distiller
from .registry import register
from .pairs import MapwiseModules

__all__ = ['ofd_margin', 'ofd_feat_loss', 'ConnectorConvBN', 'OFD']


def ofd_margin(bn):
    """Per-channel margins from a BatchNorm's affine parameters, shape (C,)."""
    std = bn.weight.detach().double().abs()
    mean = bn.bias.detach().double()
    ratio = mean / std
    below = torch.special.ndtr(-ratio)
    expected = mean - std * torch.exp(-ratio ** 2 / 2) / math.sqrt(2 * math.pi) / below
    margin = torch.where(below > 1e-3, expected, -3 * std)
    # a zero scale is a point mass at mu: the limits of the two branches give min(mu, 0)
    return torch.where(std > 0, margin, mean.clamp(max=0)).float()


def ofd_feat_loss(source, target, margin):
    """mdistiller's partial L2 ``feat_loss``: summed over channels and positions, averaged over the batch.

    ``margin`` broadcasts against the (N, C, H, W) maps, e.g. shape (1, C, 1, 1).
    """
    source, target = at_least_fp32(source), at_least_fp32(target)
    margin = margin.to(source.dtype)
    loss = ((source - margin) ** 2 * ((source > margin) & (target <= margin))
            + (source - target) ** 2 * ((source > target) & (target > margin) & (target <= 0))
            + (source - target) ** 2 * (target > 0))
    return loss.sum() / source.shape[0]


class ConnectorConvBN(MapwiseModules):
    """mdistiller's connectors: ``ConnectorConvBN(s_channels, t_channels, kernel_size=1)``, one conv (no
    bias, N(0, sqrt(2 / (k * k * C_t))) init) + BN (weight 1, bias 0) per stage; ``forward(list)``."""

    def __init__(self, s_channels, t_channels, kernel_size=1):
        super().__init__(self._connector(s, t, kernel_size) for s, t in zip(s_channels, t_channels))

    @staticmethod
    def _connector(s_channels, t_channels, kernel_size):
        conv = nn.Conv2d(s_channels, t_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / (kernel_size * kernel_size * t_channels)))
        bn = nn.BatchNorm2d(t_channels)
        nn.init.ones_(bn.weight)
        nn.init.zeros_(bn.bias)
        return nn.Sequential(conv, bn)


@register('ofd')
class OFD(Distiller):
    """gamma * CE + alpha * KD + beta * sum_i OFD_i / 2^(n - 1 - i); defaults CE 1, -b 0.001 (ImageNet 1e-4)."""
    needs_feats = True
    preact = True
    default_weights = (1.0, 0.0, 0.001)
    imagenet_weights = (1.0, 0.0, 1e-4)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        maps_s, maps_t = probe_s.feats[1:-1], probe_t.feats[1:-1]
        bns = teacher.get_bn_before_relu()
        if len(bns) != len(maps_t) or any(bn.num_features != f.shape[1] for bn, f in zip(bns, maps_t)):
            raise KDZooError(f"OFD needs the BN in front of each stage ReLU of the teacher {args.model_t}, but its "
                             f"{len(bns)} BN layers do not match its {len(maps_t)} stage maps; choose another teacher")
        self.stages = min(len(maps_s), len(maps_t))
        _check_preact(teacher, args, self.stages)
        maps_s, maps_t, bns = maps_s[-self.stages:], maps_t[-self.stages:], bns[-self.stages:]
        self.connectors = ConnectorConvBN([f.shape[1] for f in maps_s], [f.shape[1] for f in maps_t])
        for i, bn in enumerate(bns):
            self.register_buffer(f'margin{i}', ofd_margin(bn).view(1, -1, 1, 1), persistent=False)

    def method_loss(self, out_s, out_t, batch, epoch):
        maps_s = self.connectors(out_s.feats[1:-1][-self.stages:])
        maps_t = out_t.feats[1:-1][-self.stages:]
        total = 0.0
        for i, (s, t) in enumerate(zip(maps_s, maps_t)):
            t = F.adaptive_avg_pool2d(t, s.shape[-2:])
            total = total + ofd_feat_loss(s, t, getattr(self, f'margin{i}')) / 2 ** (self.stages - 1 - i)
        return total


@torch.no_grad()
def _check_preact(teacher, args, stages):
    """Refuse a teacher whose pre-ReLU maps are its plain outputs (MobileNetV2 has no ReLU after a stage)."""
    size = 224 if args.dataset == 'imagenet' else 32
    images = torch.randn(2, 3, size, size, device=next(teacher.parameters()).device)
    pre = teacher(images, is_feat=True, preact=True)[0][1:-1][-stages:]
    post = teacher(images, is_feat=True, preact=False)[0][1:-1][-stages:]
    if all(torch.equal(a, b) for a, b in zip(pre, post)):
        raise KDZooError(f"OFD distils the teacher's pre-ReLU stage outputs, but {args.model_t} has no ReLU after "
                         f"its stages; choose another teacher")
