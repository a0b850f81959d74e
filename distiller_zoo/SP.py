"""SP: Tung and Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019), on ``feats[-2]``."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Distiller, register

__all__ = ['Similarity', 'SP']


class Similarity(nn.Module):
    """RepDistiller's SP loss: ``Similarity()(g_s, g_t)`` -> one loss per pair of maps.

    Each map is flattened per sample; its (B, B) Gram matrix is L2-normalised row by row; the loss is the
    squared Frobenius distance of the two normalised Grams divided by B^2. RepDistiller returns each loss
    as a one-element vector; here it is a scalar of the same value.
    """

    def forward(self, g_s, g_t):
        return [self.similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def similarity_loss(self, f_s, f_t):
        with torch.autocast(f_s.device.type, enabled=False):
            wide = torch.promote_types(f_s.dtype, torch.float32)
            bsz = f_s.shape[0]
            diff = self.gram(f_t.to(wide)) - self.gram(f_s.to(wide))
            return diff.pow(2).sum() / (bsz * bsz)

    @staticmethod
    def gram(f):
        f = f.flatten(1)
        return F.normalize(f @ f.t())


@register('similarity')
class SP(Distiller):
    """Similarity preservation on the last feature map, ``feats[-2]``."""
    needs_feats = True
    default_weights = (1.0, 0.0, 3000.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = Similarity()

    def method_loss(self, out_s, out_t, batch, epoch):
        return sum(self.criterion([out_s.feats[-2]], [out_t.feats[-2]]))
