"""VID: Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

Each teacher map of feats[1:-1] is predicted from the student map of the same position by a
Gaussian: mean from a 1x1-conv regressor, one learned variance per channel; the loss is the
negative log-likelihood without its constant (the authors' code, as in RepDistiller). Feature
lists of unequal length pair their first layers, as RepDistiller's zip does.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .base import Distiller
from .registry import register

__all__ = ['VIDLoss', 'VID']


class VIDLoss(nn.Module):
    """``VIDLoss(num_input_channels, num_mid_channel, num_target_channels, init_pred_var=5.0, eps=1e-5)``.

    ``forward(input, target)``: the larger map is average-pooled to the other's size, mu = regressor(input)
    (1x1 conv, ReLU, 1x1 conv, ReLU, 1x1 conv, no bias), var_c = softplus(log_scale_c) + eps, and the
    loss is mean over (b, c, h, w) of 0.5 * ((mu - target)^2 / var_c + log var_c). log_scale starts where
    var = init_pred_var and is trained with the regressor.
    """

    def __init__(self, num_input_channels, num_mid_channel, num_target_channels, init_pred_var=5.0, eps=1e-5):
        super().__init__()
        self.num_input_channels, self.num_target_channels = num_input_channels, num_target_channels
        self.regressor = nn.Sequential(
            nn.Conv2d(num_input_channels, num_mid_channel, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(num_mid_channel, num_mid_channel, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(num_mid_channel, num_target_channels, kernel_size=1, bias=False),
        )
        self.log_scale = nn.Parameter(math.log(math.expm1(init_pred_var - eps)) * torch.ones(num_target_channels))
        self.eps = eps

    def forward(self, input, target):
        if input.dim() != 4 or target.dim() != 4 or input.size(1) != self.num_input_channels \
                or target.size(1) != self.num_target_channels:
            raise KDZooError(f"this VIDLoss maps {self.num_input_channels}-channel student maps to "
                             f"{self.num_target_channels}-channel teacher maps, got shapes {tuple(input.shape)} "
                             f"and {tuple(target.shape)}; build it from the probe shapes of the same layers")
        if input.size(2) > target.size(2):
            input = F.adaptive_avg_pool2d(input, target.shape[2:])
        elif input.size(2) < target.size(2):
            target = F.adaptive_avg_pool2d(target, input.shape[2:])
        mean, target = at_least_fp32(self.regressor(input)), at_least_fp32(target)
        var = (F.softplus(self.log_scale) + self.eps).to(mean.dtype).view(1, -1, 1, 1)
        return (0.5 * ((mean - target) ** 2 / var + torch.log(var))).mean()


@register('vid')
class VID(Distiller):
    """RepDistiller's ``vid``: one VIDLoss(C_s, C_t, C_t) per layer of feats[1:-1], all trained;
    ``-a 0 -b 1``."""
    needs_feats = True
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        pairs = list(zip(probe_s.feats[1:-1], probe_t.feats[1:-1]))
        if not pairs:
            raise KDZooError("vid needs intermediate feature maps (feats[1:-1]) from both networks, and one of "
                             "them has none; pick models with stages")
        self.criterion = nn.ModuleList(VIDLoss(s.size(1), t.size(1), t.size(1)) for s, t in pairs)

    def method_loss(self, out_s, out_t, batch, epoch):
        return sum(c(s, t) for c, s, t in zip(self.criterion, out_s.feats[1:-1], out_t.feats[1:-1]))
