"""FSP: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
Transfer Learning" (CVPR 2017), as RepDistiller runs it.

Init stage (--init_epochs): the student's feature modules learn to match the teacher's flow (FSP) matrices
between consecutive feature maps f0..fK. Main stage: RepDistiller's ``loss_kd`` is 0 for FSP, so the -b term
is always 0 and the stage trains on -r CE (+ -a KD). The pairs are summed with equal weights and each is a
mean over batch and matrix entries, RepDistiller's scaling rather than the paper's sum of squared L2
distances; the code wins. Student and teacher need the same channel count at every map (no adapters).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .base import Distiller
from .pairs import check_one_to_one
from .registry import register
from .two_stage import TwoStage

__all__ = ['FSP', 'FSPDistiller']


class FSP(nn.Module):
    """RepDistiller's ``FSP(s_shapes, t_shapes)(g_s, g_t)``: one loss per consecutive pair of maps, in a list.

    For maps a (C_a channels) and b (C_b), the taller pooled to the other's size, the flow matrix is
    G[n, j, i] = mean over positions of b_j * a_i (C_b x C_a, as RepDistiller orders it); a pair's loss is
    mean (G_s - G_t)^2.
    """

    def __init__(self, s_shapes, t_shapes):
        super().__init__()
        check_one_to_one('FSP', s_shapes, t_shapes, 'pick a student and teacher of the same family and widths '
                         '(e.g. teacher resnet110, student resnet32)')
        for i, (s, t) in enumerate(zip(s_shapes, t_shapes)):
            if s[1] != t[1]:
                raise KDZooError(f"FSP needs matching channel counts at every feature map, but f{i} has {s[1]} "
                                 f"channels in the student and {t[1]} in the teacher; pick a pair of equal "
                                 f"widths (e.g. teacher resnet110, student resnet32; or resnet32x4, "
                                 f"resnet8x4)")

    def forward(self, g_s, g_t):
        return [self.compute_loss(s, t) for s, t in zip(self.compute_fsp(g_s), self.compute_fsp(g_t))]

    @staticmethod
    def compute_loss(s, t):
        return (s - t).pow(2).mean()

    @staticmethod
    def compute_fsp(g):
        matrices = []
        for bottom, top in zip(g, g[1:]):
            bottom, top = at_least_fp32(bottom), at_least_fp32(top)
            if bottom.shape[2] > top.shape[2]:
                bottom = F.adaptive_avg_pool2d(bottom, top.shape[2:])
            elif bottom.shape[2] < top.shape[2]:
                top = F.adaptive_avg_pool2d(top, bottom.shape[2:])
            positions = bottom.shape[2] * bottom.shape[3]
            with torch.autocast(top.device.type, enabled=False):  # autocast would run einsum in bf16/fp16
                matrices.append(torch.einsum('nbp,nap->nba', top.flatten(2), bottom.flatten(2)) / positions)
        return matrices


@register('fsp')
class FSPDistiller(TwoStage, Distiller):
    """Two stages, modules and modes as RepDistiller's train_student.py, helper/pretrain.py and loops.py."""
    needs_feats = True
    default_weights = (1.0, 0.0, 50.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = FSP([f.shape for f in probe_s.feats[:-1]], [f.shape for f in probe_t.feats[:-1]])

    def method_loss(self, out_s, out_t, batch, epoch):
        return out_s.logits.new_zeros(())

    def init_modules(self, student):
        return [student.get_feat_modules()]

    def init_loss(self, out_s, out_t, batch):
        return sum(self.criterion(out_s.feats[:-1], out_t.feats[:-1]))
