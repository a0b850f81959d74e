"""ICKD: Liu et al., "Exploring Inter-Channel Correlation for Diversity-preserved Knowledge Distillation"
(ICCV 2021), as the authors' ADLab-AutoDrive/ICKD (``Cifar100/distiller_zoo/ICKD.py``, RepDistiller-based)
and torchdistill's ``ChSimLoss`` (refactored from the authors' ``ImageNet/torchdistill``).

The student's last stage map (``feats[-2]``) goes through a trained embedding, a conv to the teacher's
channel count and a BatchNorm (the code's ``Embed``), and each sample's C x C inter-channel Gram matrix
(channels against channels, summed over positions) of it is compared with the teacher's: both Grams are
L2-normalised row by row and the squared differences summed, then divided by C * B. The two maps may
differ in size (a Gram is C x C whatever the positions).

Defaults, from the code (the code wins):
  * CIFAR-100 (``Cifar100/train_student.py``, ``scripts/run_cifar_distill.sh``): a 1x1 conv embedding,
    division by C * B, weights -r 1 -a 0 -b 2.5 (the script's "ICKD" line; its "ICKD+KL" line, the README's
    ICKD-C row, is -a 1). The CIFAR code also builds a teacher-side ``embed_t`` that the loss never uses;
    it is not built here.
  * ImageNet (torchdistill ``configs/sample/ilsvrc2012/ickd/resnet18_from_resnet34.yaml``, as ICKD's own
    ``resnet18_from_resnet34_pluskd.yaml``): a 3x3 conv embedding (``ChannelSimilarityEmbed``), division by
    C * B^2 (``ChSimLoss``), ChSim weight 500 and torchdistill's ``KDLoss(alpha=0.5, T=1)``, i.e.
    -r 0.5 -a 0.5 -b 500; pass --kd_T 1 for its temperature. Those configs train with AdamW at lr 2e-4 from
    an ImageNet-pretrained student, which is not reproduced by the method's defaults.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .registry import register

__all__ = ['ChannelEmbed', 'ickd_loss', 'ICKD']

# --ickd_reduction: what the summed squared difference of the normalised Grams is divided by
REDUCTIONS = {'batch': 1, 'batch_squared': 2}  # C * B ** power


class ChannelEmbed(nn.Module):
    """The student's embedding: ``kernel`` x ``kernel`` conv (no bias) from ``s_n`` to ``t_n`` channels, then
    BatchNorm2d (the code's ``Embed``; 1x1 in the CIFAR code, 3x3 with padding 1 in the ImageNet code)."""

    def __init__(self, s_n, t_n, kernel=1):
        super().__init__()
        self.conv2d = nn.Conv2d(s_n, t_n, kernel_size=kernel, stride=1, padding=kernel // 2, bias=False)
        self.l2norm = nn.BatchNorm2d(t_n)  # the code's name for it, a BatchNorm all the same

    def forward(self, x):
        return self.l2norm(self.conv2d(x))


def channel_gram(f):
    """Each sample's C x C Gram matrix of its channels over all positions, rows L2-normalised (eps 1e-12)."""
    f = f.flatten(2)
    return F.normalize(torch.bmm(f, f.transpose(1, 2)), dim=2)


@full_precision
def ickd_loss(f_s, f_t, power=1):
    """ICKD's loss of an embedded student map ``f_s`` (B, C, H, W) and the teacher's ``f_t`` (B, C, H', W'):
    sum of (G_s - G_t)^2 over the row-normalised channel Grams, divided by C * B ** ``power`` (1: the CIFAR
    code's ``batch_loss``; 2: torchdistill's ``ChSimLoss``). Computed in fp32 at least."""
    bsz, channels = f_s.shape[:2]
    diff = channel_gram(f_s) - channel_gram(f_t)
    return (diff * diff).sum() / (channels * bsz ** power)


@register('ickd')
class ICKD(Distiller):
    """gamma * CE + alpha * KD + beta * ICKD(embed(student feats[-2]), teacher feats[-2]); defaults CE 1,
    -b 2.5 (ImageNet: CE 0.5, KD 0.5, -b 500 with --kd_T 1 to pass); --ickd_kernel 1 (ImageNet 3),
    --ickd_reduction batch (ImageNet batch_squared)."""
    needs_feats = True
    default_weights = (1.0, 0.0, 2.5)
    imagenet_weights = (0.5, 0.5, 500.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        s_n, t_n = probe_s.feats[-2].shape[1], probe_t.feats[-2].shape[1]
        self.embed = ChannelEmbed(s_n, t_n, args.ickd_kernel)
        self.power = REDUCTIONS[args.ickd_reduction]

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('ICKD')
        group.add_argument('--ickd_kernel', type=int, default=None,
                           help="kernel of the student's embedding conv (1, the ICKD CIFAR-100 code; ImageNet 3, "
                                "its and torchdistill's ImageNet code)")
        group.add_argument('--ickd_reduction', choices=tuple(REDUCTIONS), default=None,
                           help='divide the summed squared Gram difference by C*B (batch, the CIFAR-100 code) or '
                                "C*B^2 (batch_squared, torchdistill's ChSimLoss; the ImageNet default)")

    @staticmethod
    def settings(args):
        imagenet = args.dataset == 'imagenet'
        if args.ickd_kernel is None:
            args.ickd_kernel = 3 if imagenet else 1
        if args.ickd_reduction is None:
            args.ickd_reduction = 'batch_squared' if imagenet else 'batch'
        if args.ickd_kernel < 1 or args.ickd_kernel % 2 == 0:
            raise KDZooError(f"--ickd_kernel must be a positive odd number (1 or 3 in the ICKD code), "
                             f"got {args.ickd_kernel}")

    def method_loss(self, out_s, out_t, batch, epoch):
        return ickd_loss(self.embed(out_s.feats[-2]), out_t.feats[-2], self.power)
