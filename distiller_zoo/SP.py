"""SP: Tung and Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019), on ``feats[-2]``."""
import torch.nn.functional as F

from helper.precision import full_precision
from .base import Distiller
from .registry import register
from .pairs import PairwiseLoss

__all__ = ['Similarity', 'SP']


class Similarity(PairwiseLoss):
    """RepDistiller's SP loss: ``Similarity()(g_s, g_t)`` -> one loss per pair of maps.

    Each map is flattened per sample; its (B, B) Gram matrix is L2-normalised row by row; the loss is the
    squared Frobenius distance of the two normalised Grams divided by B^2. RepDistiller returns each loss
    as a one-element vector; here it is a scalar of the same value.
    """

    @full_precision
    def pair_loss(self, f_s, f_t):
        bsz = f_s.shape[0]
        return (self.gram(f_t) - self.gram(f_s)).pow(2).sum() / (bsz * bsz)

    similarity_loss = pair_loss  # RepDistiller's name

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
