"""RKD: Park et al., "Relational Knowledge Distillation" (CVPR 2019), on the pooled features ``feats[-1]``."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper import distributed
from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .registry import register

__all__ = ['RKDLoss', 'RKD']


class RKDLoss(nn.Module):
    """RepDistiller's RKD loss: ``RKDLoss(w_d=25, w_a=50)(f_s, f_t)`` -> w_d * distance + w_a * angle.

    Distance term: smooth-L1 between the pairwise Euclidean distance matrices, each divided by the mean of
    its non-zero entries. Angle term: smooth-L1 between the (B, B, B) cosines of the angle at sample a
    between the directions to samples b and c. The teacher side carries no gradient.
    """

    def __init__(self, w_d=25, w_a=50):
        super().__init__()
        self.w_d = w_d
        self.w_a = w_a

    @full_precision
    def forward(self, f_s, f_t):
        student, teacher = f_s.flatten(1), f_t.flatten(1).detach()
        loss_d = F.smooth_l1_loss(self.relative_distances(student), self.relative_distances(teacher))
        loss_a = F.smooth_l1_loss(self.angles(student), self.angles(teacher))
        return self.w_d * loss_d + self.w_a * loss_a

    @classmethod
    def relative_distances(cls, e):
        d = cls.pdist(e, squared=False)
        return d / d[d > 0].mean()

    @staticmethod
    def angles(e):
        unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2)).flatten()

    @staticmethod
    def pdist(e, squared=False, eps=1e-12):
        """Pairwise distances from the Gram matrix, clamped at ``eps`` before the root, zero diagonal."""
        sq = e.pow(2).sum(dim=1)
        res = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
        if not squared:
            res = res.sqrt()
        eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
        return res.masked_fill(eye, 0)


@register('rkd')
class RKD(Distiller):
    """Relational KD between the pooled features ``feats[-1]``, inner weights 25 (distance) and 50 (angle).

    A batch of one sample has no pairs (RepDistiller's loss is NaN there); its term is zero. So --batch_size 1
    (or one image per process) is refused: the run would train with cross-entropy alone.
    """
    needs_feats = True
    default_weights = (1.0, 0.0, 1.0)

    @staticmethod
    def settings(args):
        if args.batch_size is not None and args.batch_size < 2:  # None: the data set's default, resolved later
            raise KDZooError("RKD compares the samples of a batch in pairs and triplets, so it needs --batch_size "
                             "2 or more")

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        world_size = distributed.current().world_size
        if args.batch_size // world_size < 2:  # each process relates its own share of the batch
            raise KDZooError(f"RKD compares the samples of a batch in pairs, so each process needs 2 or more, but "
                             f"--batch_size {args.batch_size} gives {args.batch_size // world_size} to each of "
                             f"{world_size}; pass --batch_size {2 * world_size} or more")
        self.criterion = RKDLoss(w_d=25, w_a=50)

    def method_loss(self, out_s, out_t, batch, epoch):
        f_s, f_t = out_s.feats[-1], out_t.feats[-1]
        if f_s.shape[0] < 2:
            return f_s.new_zeros((), dtype=torch.float32)
        return self.criterion(f_s, f_t)
