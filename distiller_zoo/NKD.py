"""NKD: Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
Normalized Loss and Customized Soft Labels" (ICCV 2023), the teacher-student loss, as yzd-v/cls_KD's ``NKDLoss``
(mmcls/models/dis_losses/nkd.py on its 1.0 branch; mmcls/distillation/losses/nkd.py on master).

KD splits into a target term and a non-target term; NKD normalises the non-target one:

    NKD = -mean_i p^t_{y_i} log p^s_{y_i}  -  gamma * T^2 * mean_i sum_{k != y_i} q^t_k log q^s_k,

where p = softmax(z) at T = 1 and q = softmax over the non-target classes alone of z / T (the target logit
removed, not zeroed), for teacher (t) and student (s). The target term is not softened.

cls_KD's code had the non-target mask wrong between July and October 2023 (``scatter_(1, label, 1)`` on a
tensor of ones, so the "non-target" softmax ran over every class; fixed in its commit 9466b3f "Update nkd.py"),
and the CIFAR port in shicaiwei123/SDD-CVPR2024 (mdistiller/distillers/nkd.py) copied that version. The
default here is cls_KD's current form, which is also its March 2023 form (target logit pushed down by 1000)
and the paper's; ``--nkd_all_classes`` gives the port's. The port also hard-codes T 1, gamma 1.5 and ramps the
term in over mdistiller's DKD warm-up; those are not reproduced by the switch (pass --nkd_T 1 --nkd_gamma 1.5).

Defaults: the loss is CE + NKD with CE weight 1 (cls_KD adds the NKD loss to the head's plain loss), so
``-r 1 -a 0 -b 1``. cls_KD's CIFAR-100 config (configs/distillers/cifar100/res34_distill_res18_cifar.py) sets
T 3, gamma 3.5; its ImageNet configs (configs/distillers/imagenet/res34_distill_res18_img.py,
res50_distill_mv1_img.py) T 1, gamma 1.5.
"""
import torch
import torch.nn.functional as F

from helper.precision import at_least_fp32
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['nkd_parts', 'nkd_loss', 'NKD']


def nkd_parts(logits_s, logits_t, targets, temperature, all_classes=False):
    """Per-sample (target term, non-target term), shape (batch,): -p_t[y] * log p_s[y] at T 1, and the soft
    cross-entropy between the teacher's and the student's distributions over the non-target classes at T
    (over every class with ``all_classes``), before gamma * T^2."""
    z_s, z_t = at_least_fp32(logits_s), at_least_fp32(logits_t)
    target = F.one_hot(targets, z_s.size(1)).bool()
    p_t = F.softmax(z_t, dim=1).masked_select(target).detach()
    log_p_s = F.log_softmax(z_s, dim=1).masked_select(target)

    kept = torch.zeros_like(target) if all_classes else target
    q_t = F.softmax((z_t / temperature).masked_fill(kept, float('-inf')), dim=1)
    log_q_s = F.log_softmax((z_s / temperature).masked_fill(kept, float('-inf')), dim=1)
    # q_t is 0 on the removed class, where log_q_s is -inf: keep those products out of the sum
    return -(p_t * log_p_s), -(q_t * log_q_s.masked_fill(kept, 0)).sum(1)


def nkd_loss(logits_s, logits_t, targets, temperature, gamma, all_classes=False):
    """cls_KD's NKD: the target term -mean(p_t[y] * log p_s[y]) plus gamma * T^2 times the batch mean of the
    soft cross-entropy between the teacher's and the student's softened distributions over the non-target
    classes (over every class with ``all_classes``, as SDD-CVPR2024's port)."""
    loss_target, loss_non = nkd_parts(logits_s, logits_t, targets, temperature, all_classes)
    return loss_target.mean() + gamma * temperature ** 2 * loss_non.mean()


@register('nkd')
class NKD(Distiller):
    """gamma * CE + alpha * KD + beta * NKD(--nkd_T, --nkd_gamma); defaults CE 1, -b 1, T 3 and gamma 3.5 on
    CIFAR-100 (cls_KD's CIFAR config), T 1 and gamma 1.5 on ImageNet (its ImageNet configs).

    Mind the names: -r (gamma) weighs the CE, --nkd_gamma the non-target term inside NKD.
    """
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.temperature, self.nkd_gamma, self.all_classes = args.nkd_T, args.nkd_gamma, args.nkd_all_classes

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('NKD')
        group.add_argument('--nkd_T', type=float, default=None,
                           help="temperature of the non-target term (3, yzd-v/cls_KD's CIFAR-100 config; "
                                "ImageNet 1, its ImageNet configs)")
        group.add_argument('--nkd_gamma', type=float, default=None,
                           help='weight of the non-target term (3.5; ImageNet 1.5, as --nkd_T)')
        group.add_argument('--nkd_all_classes', action='store_true',
                           help="the non-target term over every class, as SDD-CVPR2024's CIFAR port and cls_KD "
                                "between July and October 2023 (a mask bug)")

    @staticmethod
    def settings(args):
        """Fill --nkd_T and --nkd_gamma for the data set; refuse a temperature that is not positive or a
        negative weight."""
        imagenet = args.dataset == 'imagenet'
        if args.nkd_T is None:
            args.nkd_T = 1.0 if imagenet else 3.0
        if args.nkd_gamma is None:
            args.nkd_gamma = 1.5 if imagenet else 3.5
        require(args, positive=['nkd_T'], non_negative=['nkd_gamma'])

    def method_loss(self, out_s, out_t, batch, epoch):
        return nkd_loss(out_s.logits, out_t.logits, batch.targets, self.temperature, self.nkd_gamma,
                        self.all_classes)
