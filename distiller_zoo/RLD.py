"""RLD: Sun et al., "Knowledge Distillation with Refined Logits" (arXiv 2408.07703; ICCV 2025), loss as the
official ``rld_loss`` (zju-SWJ/RLD, ``mdistiller/distillers/RLD.py``, an mdistiller fork).

Two KL(teacher || student) terms, each averaged over the batch and times its temperature squared:
  * SCD (sample confidence distillation), at --rld_alpha_T: the binary distribution [p, 1 - p] of the student's
    softmax at the *label* against the teacher's at the teacher's *top class*;
  * MCD (masked correlation distillation), at --rld_T: the softmax over only the classes the teacher ranks below
    the label (every class whose teacher logit is >= the label's, the label included, is left out), student
    against teacher. A sample whose label is the teacher's lowest class leaves nothing: its MCD is 0, as in the
    official code, where both masked rows become uniform.
Loss = rld_alpha * SCD + rld_beta * MCD, ramped in by min(epoch / warmup, 1) over 1-based epochs, as the
official ``forward_train``. The official code masks with -1e9 and takes log() of the summed probabilities;
here the same values come from log-sum-exps over the classes kept (no log(0) when a probability underflows).

Defaults (-r 1 -a 0 -b 1; -b scales the whole RLD term): the CIFAR-100 configs (configs/cifar100/rld/*.yaml) set no
RLD values, so every pair runs cfg.py's CE_WEIGHT 1, ALPHA 1, BETA 8, T 4, WARMUP 20; its ALPHA_T is 1, but the
README's RLD command adds ``--same-t`` (ALPHA_T = T), and that is the default here: --rld_alpha_T as --rld_T
(give --rld_alpha_T 1 for the configs run without --same-t). ImageNet (configs/imagenet/r34_r18/rld.yaml,
r50_mv1/rld.yaml): BETA 0.5 (2.0 for ResNet50 -> MobileNetV1), T 1, WARMUP 1, ALPHA 1 and ALPHA_T 1 (= T);
other ImageNet pairs take 0.5. --logit_stand (LS, ``logit_stand.py``; --rld_logit_stand, its old name here, and
--logit-stand are the same switch) is the official --logit-stand: both logits z-scored per sample
((z - mean) / (1e-7 + std), std with Bessel's correction) and, for the values not given, ALPHA and BETA times
--kd-weight 9 and the temperatures --base-temp 2 (--rld_alpha_T follows --rld_T), as tools/train.py does.
"""
import torch
import torch.nn.functional as F

from helper.precision import at_least_fp32
from helper.recipe import scheduled
from .base import Distiller
from .flags import add_ramp_arguments, require, settle_ramp
from .logit_stand import LogitStand, standardize
from .registry import register

__all__ = ['rld_parts', 'rld_loss', 'RLD']

# configs/imagenet/*/rld.yaml; the CIFAR-100 configs all leave cfg.py's BETA 8.
IMAGENET_BETA = {('ResNet34', 'ResNet18'): 0.5, ('ResNet50', 'MobileNetV1'): 2.0}


def _log_softmax_over(z, keep):
    """log softmax of each row over the classes in ``keep`` (values outside it are finite but meaningless)."""
    return z - torch.logsumexp(z.masked_fill(~keep, float('-inf')), dim=1, keepdim=True)


def rld_parts(logits_s, logits_t, targets, temperature, alpha_temperature, logit_stand=False):
    """Per-sample (SCD, MCD), each T^2 * KL(teacher || student) at its temperature, shape (batch,)."""
    z_s, z_t = at_least_fp32(logits_s), at_least_fp32(logits_t)
    if logit_stand:
        z_s, z_t = standardize(z_s), standardize(z_t)
    label = F.one_hot(targets, z_s.size(1)).bool()
    top = F.one_hot(z_t.argmax(dim=1), z_s.size(1)).bool()

    def binary(z, chosen):
        """log [p_chosen, 1 - p_chosen] of softmax(z), one chosen class per row."""
        log_all = torch.logsumexp(z, dim=1)
        log_rest = torch.logsumexp(z.masked_fill(chosen, float('-inf')), dim=1)
        return torch.stack([z.masked_select(chosen) - log_all, log_rest - log_all], dim=1)

    scd = F.kl_div(binary(z_s / alpha_temperature, label), binary(z_t / alpha_temperature, top),
                   reduction='none', log_target=True).sum(1) * alpha_temperature ** 2

    keep = z_t < z_t.gather(1, targets.unsqueeze(1))  # the classes the teacher ranks strictly below the label
    any_kept = keep.any(dim=1)
    keep = keep | ~any_kept.unsqueeze(1)  # rows with nothing kept: any finite stand-in, zeroed below
    log_q = _log_softmax_over(z_s / temperature, keep)
    log_p = _log_softmax_over(z_t / temperature, keep)
    terms = torch.where(keep, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))
    mcd = terms.sum(1) * any_kept * temperature ** 2
    return scd, mcd


def rld_loss(logits_s, logits_t, targets, alpha, beta, temperature, alpha_temperature, logit_stand=False):
    """The official ``rld_loss``: alpha * SCD + beta * MCD, averaged over the batch."""
    scd, mcd = rld_parts(logits_s, logits_t, targets, temperature, alpha_temperature, logit_stand)
    return (alpha * scd + beta * mcd).mean()


@register('rld')
class RLD(LogitStand, Distiller):
    """gamma * CE + alpha * KD + beta * min(epoch / warmup, 1) * (rld_alpha * SCD + rld_beta * MCD).

    Defaults are the official repo's: CE 1, no KD term, -b 1; --rld_alpha 1, --rld_beta 8, --rld_T 4,
    --rld_alpha_T as --rld_T (the README's --same-t), --rld_warmup 20; ImageNet beta 0.5 (2 for ResNet50 ->
    MobileNetV1), T 1, warm-up 1. The values used are written back into args.
    """
    default_weights = (1.0, 0.0, 1.0)
    # tools/train.py's --logit-stand: --kd-weight multiplies ALPHA and BETA, --base-temp sets T (and ALPHA_T, which
    # follows T here as under --same-t)
    ls_temperatures, ls_scaled = ('rld_T',), ('rld_alpha', 'rld_beta')

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.rld_alpha, self.rld_beta = args.rld_alpha, args.rld_beta
        self.temperature, self.alpha_temperature = args.rld_T, args.rld_alpha_T
        self.warmup = scheduled(args, 'rld_warmup')

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('RLD')
        group.add_argument('--rld_alpha', type=float, default=None,
                           help="weight of SCD (1; times --kd-weight with --logit_stand): zju-SWJ/RLD "
                                "mdistiller/engine/cfg.py")
        group.add_argument('--rld_beta', type=float, default=None,
                           help="weight of MCD (8; ImageNet 0.5, 2 for ResNet50 -> MobileNetV1; times --kd-weight "
                                "with --logit_stand): cfg.py and configs/imagenet/*/rld.yaml")
        add_ramp_arguments(group, 'rld', 'RLD')
        group.add_argument('--rld_alpha_T', type=float, default=None,
                           help="SCD temperature (default: --rld_T, the README command's --same-t; cfg.py's "
                                "ALPHA_T without it is 1)")

    @staticmethod
    def settings(args):
        """Fill the RLD flags not given with the official values for the data set and pair; check them."""
        imagenet = args.dataset == 'imagenet'
        if args.rld_alpha is None:
            args.rld_alpha = 1.0
        if args.rld_beta is None:
            args.rld_beta = IMAGENET_BETA.get((args.model_t, args.model_s), 0.5) if imagenet else 8.0
        settle_ramp(args, 'rld')
        if args.rld_alpha_T is None:
            args.rld_alpha_T = args.rld_T
        require(args, positive=['rld_alpha_T'], non_negative=['rld_alpha', 'rld_beta'])

    def method_loss(self, out_s, out_t, batch, epoch):
        return rld_loss(self.standardized(out_s.logits), self.standardized(out_t.logits), batch.targets, self.rld_alpha,
                        self.rld_beta, self.temperature, self.alpha_temperature)
