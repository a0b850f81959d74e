"""TTM: Zheng and Yang, "Knowledge Distillation Based on Transformed Teacher Matching" (ICLR 2024), loss as the
official ``TTM`` criterion (zkxufo/TTM, ``distiller_zoo/ttm.py``).

TTM drops the temperature on the student's side: the student's own softmax q = softmax(z_s) is matched to the
teacher's power-transformed distribution p^l / sum(p^l), p = softmax(z_t), with l = --ttm_l (the paper's gamma,
l = 1/T), by KL(teacher || student) summed over classes and averaged over the batch, with no T^2 factor. Since
p^l / sum(p^l) = softmax(l * z_t), the target is computed here in log space (the official code raises the
softmax to the power l, which gives the same values unless a probability underflows).

Defaults are the official README's command (zkxufo/TTM, README.md, vgg13 -> vgg8, the only TTM command the repo
publishes): ``--distill ttm --ttm_l 0.1 -r 1 -b 45 -a 0``; its train_student.py has no per-pair defaults
(``-a`` and ``-b`` default to None there, so it stops unless both are given). The official ``--add`` (a second
logit loss in the ``-a`` slot, default kd) is ``distiller_zoo/add.py``: ``--add ttm``/``wttm`` puts TTM or WTTM there
for any ``--distill`` method (the README's ``--distill crd --add wttm --ttm_l 0.2 -b 0.8 -a 4``).
The repo has no ImageNet script (its ImageNet runs used torchdistill), so ImageNet gets the same defaults.
"""
import torch.nn as nn
import torch.nn.functional as F

from helper.precision import at_least_fp32
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['ttm_parts', 'ttm_loss', 'wttm_loss', 'TTMLoss', 'TTM']


def ttm_parts(logits_s, logits_t, power):
    """Per-sample KL(p^l / sum(p^l) || softmax(z_s)) and the power sum U = sum(p^l), p = softmax(z_t); (batch,) each."""
    log_q = F.log_softmax(at_least_fp32(logits_s), dim=1)
    log_p = F.log_softmax(at_least_fp32(logits_t), dim=1)
    log_target = F.log_softmax(power * log_p, dim=1)
    kl = F.kl_div(log_q, log_target, reduction='none', log_target=True).sum(1)
    power_sum = (power * log_p).logsumexp(dim=1).exp()
    return kl, power_sum


def ttm_loss(logits_s, logits_t, power):
    """The official ``TTM(l)(y_s, y_t)``: the batch mean of the per-sample KL."""
    return ttm_parts(logits_s, logits_t, power)[0].mean()


def wttm_loss(logits_s, logits_t, power):
    """The official ``WTTM(l)(y_s, y_t)``: the batch mean of sum(p^l) times the per-sample KL."""
    kl, power_sum = ttm_parts(logits_s, logits_t, power)
    return (power_sum * kl).mean()


class TTMLoss(nn.Module):
    """The official criteria as modules: ``TTMLoss(l)(y_s, y_t)``, ``TTMLoss(l, weighted=True)`` for WTTM."""

    def __init__(self, l, weighted=False):  # noqa: E741 (the official argument's name)
        super().__init__()
        self.l, self.weighted = l, weighted

    def forward(self, y_s, y_t):
        return (wttm_loss if self.weighted else ttm_loss)(y_s, y_t, self.l)


@register('ttm')
class TTM(Distiller):
    """gamma * CE + alpha * KD + beta * TTM(--ttm_l); defaults the official README's: -r 1 -a 0 -b 45, --ttm_l 0.1."""
    default_weights = (1.0, 0.0, 45.0)
    default_power = 0.1
    weighted = False

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.power = args.ttm_l

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('TTM and WTTM')
        group.add_argument('--ttm_l', type=float, default=None,
                           help="exponent l of the teacher's power transform, the paper's gamma = 1/T (ttm 0.1, "
                                "wttm 0.2: zkxufo/TTM README.md's commands)")

    @classmethod
    def settings(cls, args):
        """Fill --ttm_l with the method's README value and refuse one that is not positive."""
        if args.ttm_l is None:
            args.ttm_l = cls.default_power
        require(args, positive=['ttm_l'])

    def method_loss(self, out_s, out_t, batch, epoch):
        return (wttm_loss if self.weighted else ttm_loss)(out_s.logits, out_t.logits, self.power)
