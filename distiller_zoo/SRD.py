"""SRD: Miles and Mikolajczyk, "Understanding the Role of the Projector in Knowledge Distillation" (AAAI 2024),
as torchdistill's ``SRDLoss`` with its ``SRDModelWrapper`` and official config
(``configs/official/ilsvrc2012/roymiles/aaai2024/srd-resnet18_from_resnet34.yaml``), which refactors the
authors' roymiles/Simple-Recipe-Distillation (``imagenet/torchdistill/losses/single.py``,
``OurDistillationLoss`` with ``configs/ilsvrc2012/ours/res3418.yaml``).

The pooled penultimate features (``feats[-1]``, the vector the classifier reads) are compared after a
trained linear projector on the student's side (``nn.Linear(s_dim, t_dim)``, even when the widths agree)
and a BatchNorm1d without affine parameters (eps 1e-4) on each side:

    srd = 2 * log( sum over batch and features of |BN_s(W z_s + b) - BN_t(z_t)| ^ p ) + T^2 * KL(p_t || p_s)

with p = --srd_exponent 4, the KL of the softmaxes at --srd_T 1 averaged over the batch; the whole term
has weight 1 beside the cross-entropy (-r 1 -a 0 -b 1). torchdistill's ``SRDLoss`` leaves out the T^2 of the
authors' KL; the two agree at the published T 1.

The BatchNorms normalise with the batch's own statistics in training, as in both codes (they are modules of
the loss and never put in eval mode). The teacher network itself stays in eval mode, as kdzoo keeps every
teacher and as the authors' code does (``teacher_model.eval()`` each epoch); torchdistill's current
distillation box never puts the teacher in eval mode, so its ImageNet example runs the teacher's own
BatchNorms on batch statistics: that is not reproduced. A batch of one image (a last short batch) has no
batch statistics; its feature term is left out (the KL still counts), where the codes would stop.

Defaults: the ImageNet recipe above for every data set. The authors publish no CIFAR-100 code or config
for SRD (their CIFAR code, roymiles/ITRD, is another method), so the same loss on CIFAR is our choice.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['SRDProjector', 'srd_feature_loss', 'srd_kl', 'srd_loss', 'SRD']

BN_EPS = 1e-4  # the config's norm_kwargs (and the authors' BatchNorm1d)


class SRDProjector(nn.Module):
    """The student's ``Linear(s_dim, t_dim)`` then ``BatchNorm1d(t_dim, eps=1e-4, affine=False)``, and the
    teacher's own ``BatchNorm1d(t_dim, eps=1e-4, affine=False)``: ``forward(z_s, z_t)`` gives both normalised."""

    def __init__(self, s_dim, t_dim):
        super().__init__()
        self.linear = nn.Linear(s_dim, t_dim)
        self.norm_s = nn.BatchNorm1d(t_dim, eps=BN_EPS, affine=False)
        self.norm_t = nn.BatchNorm1d(t_dim, eps=BN_EPS, affine=False)

    def forward(self, z_s, z_t):
        return self.norm_s(self.linear(z_s)), self.norm_t(z_t)


@full_precision
def srd_feature_loss(f_s, f_t, exponent=4.0):
    """log of the summed |f_s - f_t| ** exponent over every element (the feature part of ``SRDLoss``, before
    its factor 2), in fp32 at least."""
    return torch.log((f_s - f_t).abs().pow(exponent).sum())


@full_precision
def srd_kl(logits_s, logits_t, temperature=1.0):
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes and averaged over the batch, in fp32 at least."""
    log_p_s = F.log_softmax(logits_s / temperature, dim=1)
    p_t = F.softmax(logits_t / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction='batchmean') * temperature ** 2


def srd_loss(f_s, f_t, logits_s, logits_t, exponent=4.0, temperature=1.0):
    """The whole SRD term of normalised features ``f_s``/``f_t`` and the two networks' logits:
    2 * ``srd_feature_loss`` + ``srd_kl``."""
    return 2 * srd_feature_loss(f_s, f_t, exponent) + srd_kl(logits_s, logits_t, temperature)


@register('srd')
class SRD(Distiller):
    """gamma * CE + alpha * KD + beta * SRD(projected, normalised pooled features; logits); defaults CE 1,
    -b 1, --srd_exponent 4, --srd_T 1 (the official config's, on every data set)."""
    needs_feats = True
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        s_dim, t_dim = probe_s.feats[-1].shape[1], probe_t.feats[-1].shape[1]
        self.projector = SRDProjector(s_dim, t_dim)
        self.exponent, self.temperature = args.srd_exponent, args.srd_T

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('SRD')
        group.add_argument('--srd_exponent', type=float, default=4.0,
                           help='power of the absolute feature difference inside the log (4, the official config)')
        group.add_argument('--srd_T', type=float, default=1.0,
                           help="temperature of SRD's own KL term (1, the official config)")

    @staticmethod
    def settings(args):
        require(args, positive=['srd_exponent', 'srd_T'])
        if args.batch_size is not None and args.batch_size < 2:
            raise KDZooError("SRD normalises the features with batch statistics, so it needs --batch_size 2 or more")

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.srd(out_s.feats[-1], out_t.feats[-1], out_s.logits, out_t.logits)

    @full_precision
    def srd(self, z_s, z_t, logits_s, logits_t):
        """The SRD term of the pooled features and logits, projector and BatchNorms in fp32 at least."""
        if z_s.shape[0] < 2:  # no batch statistics: the KL alone, the projector kept in the graph at 0
            return srd_kl(logits_s, logits_t, self.temperature) + \
                0 * sum(p.sum() for p in self.projector.parameters())
        f_s, f_t = self.projector(z_s, z_t)
        return srd_loss(f_s, f_t, logits_s, logits_t, self.exponent, self.temperature)
