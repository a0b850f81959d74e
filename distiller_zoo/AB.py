"""AB: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons"
(AAAI 2019), as RepDistiller runs it.

Init stage (--init_epochs): a connector and the student's feature modules learn to put each pre-activation
neuron of stages 1-3 on the same side of zero as the teacher's, with a margin (``ABLoss``). Main stage:
RepDistiller's ``loss_kd`` is 0 for AB, so the -b term is always 0 and the stage trains on -r CE (+ -a KD);
the connector is kept, frozen, in eval mode. The paper's second stage distils with KD; RepDistiller's
script uses -a 0. The code wins.
"""
import torch
import torch.nn as nn

from helper.precision import at_least_fp32
from models.util import Connector
from .base import Distiller
from .registry import register
from .two_stage import TwoStage

__all__ = ['ABLoss', 'Connector', 'AB']


class ABLoss(nn.Module):
    """RepDistiller's ``ABLoss(feat_num, margin)(g_s, g_t)``: one loss per layer, in a list.

    Per element, with s the connected student map and t the teacher's pre-activation map: (s + m)^2 where
    t <= 0 and s > -m, (s - m)^2 where t > 0 and s <= m, else 0 (a squared hinge on the wrong side of the
    margin). Each layer's sum is weighted by 2^(i - feat_num + 1), divided by the batch size and scaled by
    3/1000.
    """

    def __init__(self, feat_num, margin=1.0):
        super().__init__()
        self.w = [2.0 ** (i - feat_num + 1) for i in range(feat_num)]
        self.margin = margin

    def forward(self, g_s, g_t):
        batch = g_s[0].shape[0]
        return [w * self.boundary_loss(s, t) / batch * 3 / 1000 for w, s, t in zip(self.w, g_s, g_t)]

    def boundary_loss(self, source, target):
        source = at_least_fp32(source)
        wrong_if_negative = (source + self.margin).clamp(min=0)
        wrong_if_positive = (source - self.margin).clamp(max=0)
        return torch.where(target > 0, wrong_if_positive, wrong_if_negative).pow(2).sum()


@register('abound')
class AB(TwoStage, Distiller):
    """Two stages, modules and modes as RepDistiller's train_student.py, helper/pretrain.py and loops.py."""
    needs_feats = True
    preact = True
    default_weights = (1.0, 0.0, 1.0)
    init_stage_only = ('connector',)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        s_shapes = [f.shape for f in probe_s.feats[1:-1]]
        self.connector = Connector(s_shapes, [f.shape for f in probe_t.feats[1:-1]])
        self.criterion = ABLoss(len(s_shapes))

    def method_loss(self, out_s, out_t, batch, epoch):
        return out_s.logits.new_zeros(())

    def init_modules(self, student):
        return [self.connector, student.get_feat_modules()]

    def init_loss(self, out_s, out_t, batch):
        return sum(self.criterion(self.connector(out_s.feats[1:-1]), out_t.feats[1:-1]))
