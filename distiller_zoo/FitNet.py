"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

The paper trains the hint stage first and then the whole student; RepDistiller (the code wins) trains
the regressor and the student together from the first epoch, with no hint pre-training.
"""
import torch.nn as nn
import torch.nn.functional as F

from models.util import ConvReg
from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller, check_layer
from .registry import register

__all__ = ['HintLoss', 'FitNet']


class HintLoss(nn.Module):
    """RepDistiller's hint loss: ``HintLoss()(f_s, f_t)``, the mean squared error over all elements
    (``f_s`` is the regressed student map)."""

    @full_precision
    def forward(self, f_s, f_t):
        return F.mse_loss(f_s, f_t)


@register('hint')
class FitNet(Distiller):
    """Regress the student's ``feats[--hint_layer]`` onto the teacher's with a trained ``ConvReg``."""
    needs_feats = True
    default_weights = (1.0, 0.0, 100.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        layer = args.hint_layer
        for probe, network in ((probe_s, 'student'), (probe_t, 'teacher')):
            check_layer(layer, probe.feats, '--hint_layer', network)
            if probe.feats[layer].dim() != 4:
                raise KDZooError(f"--hint_layer {layer} picks the {network}'s pooled feature vector, not a "
                                 f"feature map; pick a map between 0 and {len(probe.feats) - 2}")
        self.hint_layer = layer
        self.regressor = ConvReg(probe_s.feats[layer].shape, probe_t.feats[layer].shape, pool_target=False)
        self.criterion = HintLoss()

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('FitNet (hint)')
        group.add_argument('--hint_layer', type=int, default=2, help='FitNet feature index (SimKD repo: 1)')

    def method_loss(self, out_s, out_t, batch, epoch):
        layer = self.hint_layer
        return self.criterion(self.regressor(out_s.feats[layer]), out_t.feats[layer])
