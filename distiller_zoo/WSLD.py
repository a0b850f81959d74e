"""WSLD: Zhou et al., "Rethinking Soft Labels for Knowledge Distillation: A Bias-Variance Tradeoff
Perspective" (ICLR 2021), loss as the authors' ``WSLDistiller`` (bellymonster/Weighted-Soft-Label-Distillation,
knowledge_distiller.py) and yzd-v/cls_KD's ``WSLDLoss`` (mmcls/models/dis_losses/wsld.py), which compute the
same thing.

Per sample, the soft cross-entropy of the softened teacher against the softened student,
-sum_k softmax(t/T)_k log softmax(s/T)_k, is weighted by 1 - exp(-r) with r = CE_s / (CE_t + 1e-7), the ratio
of the student's and the teacher's plain (T = 1) cross-entropies on the label, computed without gradient (and
clipped below at 0, which a ratio of two cross-entropies never is). WSLD = T^2 times the batch mean of the
weighted term. Samples the teacher gets more right than the student weigh more; samples where the student is
already ahead of the teacher (the paper's "regularization samples") weigh less.

The term is a soft cross-entropy, not a KL: its value includes the teacher's entropy times the weight, which
has no gradient (the weight is detached), so the gradient is that of the weighted KL, the value is not.

Defaults: the loss is CE + alpha * WSLD with CE weight 1, so ``-r 1 -a 0 -b alpha``. cls_KD's CIFAR-100
config (configs/distillers/cifar100/res34_distill_res18_cifar.py) sets T 4, alpha 2.25; its ImageNet configs
(configs/distillers/imagenet/res34_distill_res18_img.py, res50_distill_mv1_img.py) and the authors' code
(T 2, alpha 2.5 in ``WSLDistiller``, which only has an ImageNet recipe) set T 2, alpha 2.5.
"""
import torch
import torch.nn.functional as F

from helper.precision import at_least_fp32
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['wsld_loss', 'WSLD']


def wsld_loss(logits_s, logits_t, targets, temperature):
    """T^2 * mean over the batch of (1 - exp(-CE_s / (CE_t + 1e-7))) * soft-CE(softmax(t/T), softmax(s/T)),
    the weight computed without gradient from the plain cross-entropies on ``targets``."""
    z_s, z_t = at_least_fp32(logits_s), at_least_fp32(logits_t)
    soft_ce = -(F.softmax(z_t / temperature, dim=1) * F.log_softmax(z_s / temperature, dim=1)).sum(1)
    with torch.no_grad():
        ce_s = F.cross_entropy(z_s, targets, reduction='none')
        ce_t = F.cross_entropy(z_t, targets, reduction='none')
        weight = 1 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp(min=0))
    return temperature ** 2 * (weight * soft_ce).mean()


@register('wsld')
class WSLD(Distiller):
    """gamma * CE + alpha * KD + beta * WSLD(--wsld_T); defaults CE 1, -b 2.25 and T 4 on CIFAR-100 (cls_KD's
    CIFAR config), -b 2.5 and T 2 on ImageNet (cls_KD's ImageNet configs, the authors' code)."""
    default_weights = (1.0, 0.0, 2.25)
    imagenet_weights = (1.0, 0.0, 2.5)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.temperature = args.wsld_T

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('WSLD')
        group.add_argument('--wsld_T', type=float, default=None,
                           help="WSLD temperature (4, yzd-v/cls_KD's CIFAR-100 config; ImageNet 2, its ImageNet "
                                "configs and the authors' code); -b is WSLD's alpha (2.25; ImageNet 2.5)")

    @staticmethod
    def settings(args):
        """Fill --wsld_T for the data set and refuse a temperature that is not positive."""
        if args.wsld_T is None:
            args.wsld_T = 2.0 if args.dataset == 'imagenet' else 4.0
        require(args, positive=['wsld_T'])

    def method_loss(self, out_s, out_t, batch, epoch):
        return wsld_loss(out_s.logits, out_t.logits, batch.targets, self.temperature)
