"""DKD: Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022), as megvii-research/mdistiller runs it.

KD splits into TCKD, a binary KL between the target-class and the all-other-classes masses, and NCKD, a
KL between the distributions over the non-target classes alone; KD is TCKD + (1 - p_t) * NCKD per sample,
and DKD frees that NCKD weight: alpha * TCKD + beta * NCKD, both times T^2 and averaged over the batch.
The paper's loss is CE + alpha * TCKD + beta * NCKD; the code also ramps the DKD term in linearly,
min(epoch / warmup, 1) with 1-based epochs, and so does this file.

mdistiller takes log() of the two summed probabilities and removes the target class by subtracting 1000
from its logit; here both come from log-sum-exps over the classes kept, which is the same value without
log(0) when a probability underflows.

With --logit_stand (LS, ``logit_stand.py``) both logits are z-scored first, and of the values not given
--dkd_T becomes LS's --base-temp and --dkd_alpha, --dkd_beta are multiplied by its --kd-weight, as LS's
tools/train.py does (2 and 9, or the LS README's run for the pair, ``LS_PUBLISHED``, whose BETA replaces
mdistiller's before it is multiplied).
"""
import torch
import torch.nn.functional as F

from helper.precision import at_least_fp32
from helper.recipe import scheduled
from .base import Distiller
from .flags import add_ramp_arguments, require, settle_ramp
from .logit_stand import LogitStand
from .registry import register

__all__ = ['dkd_parts', 'dkd_loss', 'DKD']

# mdistiller's configs/cifar100/dkd/*.yaml set DKD.BETA per pair; every other pair uses cfg.py's 8.0.
CIFAR_BETA = {('wrn_40_2', 'wrn_16_2'): 6.0, ('wrn_40_2', 'wrn_40_1'): 6.0, ('vgg13', 'vgg8'): 6.0,
              ('vgg13', 'MobileNetV2'): 6.0, ('resnet56', 'resnet20'): 2.0, ('resnet110', 'resnet32'): 2.0}
# configs/imagenet/*/dkd.yaml: beta 0.5 for ResNet34 -> ResNet18, 2.0 for ResNet50 -> MobileNetV1/V2.
IMAGENET_BETA = {('ResNet50', 'MobileNetV1'): 2.0, ('ResNet50', 'MobileNetV2_Imagenet'): 2.0}


def _ls_run(base_temp, kd_weight, beta=None):
    return dict(base_temp=base_temp, kd_weight=kd_weight, **({} if beta is None else {'dkd_beta': beta}))


# The LS README's CIFAR-100 DKD + LS runs (log names dkd,TEACHER,STUDENT,BASE_TEMPERATURE,KD_WEIGHT[,BETA]; the
# BETA is the config's, before --kd-weight multiplies it; a name without one ran the config's, 8 here).
LS_PUBLISHED = {
    ('resnet32x4', 'resnet8x4'): _ls_run(2.0, 9.0), ('vgg13', 'vgg8'): _ls_run(2.0, 15.0, 2.0),
    ('wrn_40_2', 'wrn_40_1'): _ls_run(2.0, 12.0, 2.0), ('wrn_40_2', 'wrn_16_2'): _ls_run(2.0, 12.0, 2.0),
    ('resnet56', 'resnet20'): _ls_run(3.0, 18.0, 2.0), ('resnet110', 'resnet32'): _ls_run(2.0, 15.0, 2.0),
    ('resnet110', 'resnet20'): _ls_run(2.0, 15.0, 2.0), ('resnet32x4', 'ShuffleV2'): _ls_run(2.0, 9.0),
    ('resnet32x4', 'wrn_16_2'): _ls_run(2.0, 9.0, 2.0), ('resnet32x4', 'wrn_40_2'): _ls_run(2.0, 9.0, 8.0),
    ('wrn_40_2', 'resnet8x4'): _ls_run(2.0, 18.0, 2.0), ('wrn_40_2', 'MobileNetV2'): _ls_run(2.0, 15.0, 2.0),
    ('vgg13', 'MobileNetV2'): _ls_run(3.0, 9.0, 2.0), ('ResNet50', 'MobileNetV2'): _ls_run(2.0, 15.0, 2.0)}


def dkd_parts(logits_s, logits_t, targets, temperature):
    """Per-sample (TCKD, NCKD), each T^2 * KL(teacher || student), shape (batch,)."""
    z_s = at_least_fp32(logits_s) / temperature
    z_t = at_least_fp32(logits_t) / temperature
    target = F.one_hot(targets, z_s.size(1)).bool()

    def binary_and_rest(z):
        """log [p_target, 1 - p_target] and the log-softmax over the non-target classes."""
        log_all = torch.logsumexp(z, dim=1, keepdim=True)
        log_rest = torch.logsumexp(z.masked_fill(target, float('-inf')), dim=1, keepdim=True)
        z_target = z.masked_select(target).unsqueeze(1)
        return torch.cat([z_target, log_rest], dim=1) - log_all, z - log_rest

    binary_s, rest_s = binary_and_rest(z_s)
    binary_t, rest_t = binary_and_rest(z_t)
    tckd = F.kl_div(binary_s, binary_t, reduction='none', log_target=True).sum(1)
    nckd = (F.kl_div(rest_s, rest_t, reduction='none', log_target=True) * ~target).sum(1)
    return tckd * temperature ** 2, nckd * temperature ** 2


def dkd_loss(logits_s, logits_t, targets, alpha, beta, temperature):
    """mdistiller's ``dkd_loss``: alpha * TCKD + beta * NCKD, averaged over the batch."""
    tckd, nckd = dkd_parts(logits_s, logits_t, targets, temperature)
    return (alpha * tckd + beta * nckd).mean()


@register('dkd')
class DKD(LogitStand, Distiller):
    """gamma * CE + alpha * KD + beta * min(epoch / warmup, 1) * (dkd_alpha * TCKD + dkd_beta * NCKD).

    Defaults are mdistiller's: CE 1, no KD term, -b 1; --dkd_alpha 1, --dkd_T 4, --dkd_warmup 20 and
    --dkd_beta per pair (8; 6 or 2 for the pairs in ``CIFAR_BETA``). On ImageNet its configs use T 1,
    warm-up 1 and beta 0.5 (2 for ResNet50 -> MobileNet). The values used are written back into args.
    """
    default_weights = (1.0, 0.0, 1.0)
    ls_temperatures, ls_scaled, ls_published = ('dkd_T',), ('dkd_alpha', 'dkd_beta'), LS_PUBLISHED

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.dkd_alpha, self.dkd_beta = args.dkd_alpha, args.dkd_beta
        self.temperature, self.warmup = args.dkd_T, scheduled(args, 'dkd_warmup')

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('DKD')
        group.add_argument('--dkd_alpha', type=float, default=None, help='weight of TCKD (1.0)')
        group.add_argument('--dkd_beta', type=float, default=None,
                           help="weight of NCKD (default: mdistiller's per pair, 8.0 for most)")
        add_ramp_arguments(group, 'dkd', 'DKD')

    @staticmethod
    def settings(args):
        """Fill --dkd_beta, --dkd_T and --dkd_warmup not given with mdistiller's values; check all four."""
        pair = (args.model_t, args.model_s)
        if args.dkd_alpha is None:
            args.dkd_alpha = 1.0
        if args.dkd_beta is None:
            imagenet = args.dataset == 'imagenet'
            args.dkd_beta = IMAGENET_BETA.get(pair, 0.5) if imagenet else CIFAR_BETA.get(pair, 8.0)
        require(args, non_negative=['dkd_alpha', 'dkd_beta'])
        settle_ramp(args, 'dkd')

    def method_loss(self, out_s, out_t, batch, epoch):
        return dkd_loss(self.standardized(out_s.logits), self.standardized(out_t.logits), batch.targets, self.dkd_alpha,
                        self.dkd_beta, self.temperature)
