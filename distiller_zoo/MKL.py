"""MKL, the magnitude-enhanced KL of "NTCE-KD: Non-Target-Class-Enhanced Knowledge Distillation"
(Li et al., Sensors 2024), without NTCE-KD's strong view (the reference code with ``NTCE.ISAUG False``).

For each shrink factor f the teacher's top logit and the student's ground-truth logit are both lowered
by f times the teacher's top-1 minus top-2 gap, then a temperature KL is taken; MKL is the mean over the
factors. f = 0 is plain KD, f > 0 gives the non-target classes more of the softened mass.
"""
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.recipe import scheduled
from .base import Distiller, kd_loss
from .flags import add_ramp_arguments, settle_ramp
from .registry import register

__all__ = ['mkl_loss', 'parse_factors', 'MKL']

ALL_FACTORS = (2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0)  # the reference's cfg default
SHORT_FACTORS = (2.0, 1.5, 1.0, 0.5, 0.0)  # its configs for resnet32x4 -> resnet8x4, ShuffleV1, ShuffleV2
SHORT_FACTOR_PAIRS = {('resnet32x4', 'resnet8x4'), ('resnet32x4', 'ShuffleV1'), ('resnet32x4', 'ShuffleV2')}
LOW_WEIGHT_PAIRS = {('resnet56', 'resnet20'), ('resnet110', 'resnet32')}  # KD_WEIGHT 2.0 in their configs


def mkl_loss(logits_s, logits_t, targets, factors, temperature):
    """Mean over ``factors`` of T^2 KL(softmax(t_f / T) || softmax(s_f / T)) (batch mean), where t_f is the
    teacher's logits with its arg-max lowered by f * (top-1 - top-2) and s_f the student's logits with the
    ground-truth class lowered by the same amount."""
    top2 = logits_t.detach().float().topk(2, dim=1)
    gap = top2.values[:, 0] - top2.values[:, 1]
    teacher_top = F.one_hot(top2.indices[:, 0], logits_t.size(1)).to(gap.dtype)
    truth = F.one_hot(targets, logits_s.size(1)).to(gap.dtype)
    total = 0
    for factor in factors:
        shift = (factor * gap)[:, None]
        total = total + kd_loss(logits_s.float() - shift * truth, logits_t.float() - shift * teacher_top,
                                temperature)
    return total / len(factors)


def parse_factors(text):
    """'2,1.5,1' -> (2.0, 1.5, 1.0); a one-line KDZooError for an empty or malformed list."""
    words = [word.strip() for word in text.split(',') if word.strip()]
    if not words:
        raise KDZooError(f"--mkl_factors is empty ('{text}'); give at least one shrink factor, e.g. "
                         f"--mkl_factors 2,1.5,1,0.5,0")
    try:
        return tuple(float(word) for word in words)
    except ValueError:
        raise KDZooError(f"--mkl_factors must be comma-separated numbers such as 2,1.5,1,0.5,0, got '{text}' "
                         f"(a list starting with a minus sign needs --mkl_factors=-1,...)") from None


@register('mkl')
class MKL(Distiller):
    """gamma * CE + alpha * KD + min(epoch / warmup, 1) * beta * MKL on the student's one view.

    Defaults follow NTCE-KD's configs per pair and data set (``settings``, ``defaults_for``): CE 1, MKL 8
    (2 for resnet56 -> resnet20 and resnet110 -> resnet32, 2 on ImageNet), T 4 and warm-up 20 (ImageNet:
    T 1, warm-up 1), factors 2,1.5,1,0.5,0 for resnet32x4 -> resnet8x4 / ShuffleV1 / ShuffleV2, else
    2,1.5,1,0.5,0,-0.5,-1.
    """
    default_weights = (1.0, 0.0, 8.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.factors, self.temperature = tuple(args.mkl_factors), args.mkl_T
        self.warmup = scheduled(args, 'mkl_warmup')

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('MKL and NTCE-KD')
        group.add_argument('--mkl_factors', type=parse_factors, default=None,
                           help='shrink factors, e.g. 2,1.5,1,0.5,0,-0.5,-1 (default: per pair, as NTCE-KD)')
        add_ramp_arguments(group, 'mkl', 'MKL')

    @classmethod
    def defaults_for(cls, args):
        cls.settings(args)
        low = args.dataset == 'imagenet' or (args.model_t, args.model_s) in LOW_WEIGHT_PAIRS
        return (1.0, 0.0, 2.0 if low else 8.0)

    @staticmethod
    def settings(args):
        """Fill --mkl_factors, --mkl_T and --mkl_warmup not given with NTCE-KD's config for the pair, check
        them, and return them as (factors, temperature, warm-up epochs)."""
        if args.mkl_factors is None:
            pair = (args.model_t, args.model_s)
            args.mkl_factors = SHORT_FACTORS if pair in SHORT_FACTOR_PAIRS else ALL_FACTORS
        settle_ramp(args, 'mkl')
        return tuple(args.mkl_factors), args.mkl_T, args.mkl_warmup

    def method_loss(self, out_s, out_t, batch, epoch):
        return mkl_loss(out_s.logits, out_t.logits, batch.targets, self.factors, self.temperature)
