"""DIST+: Huang et al., "DIST+: Knowledge Distillation From a Stronger Adaptive Teacher" (TPAMI 2025), loss as
torchdistill's ``DISTPlusLoss`` (yoshitomo-matsubara/torchdistill, ``torchdistill/losses/mid_level.py``; the
official code this toolbox follows, the authors having published none for DIST+).

The loss is DIST's on the logits plus two relations on the last stage's feature maps f (N, C, H, W):

  DIST   tau^2 * (beta * inter + gamma * intra) on softmax(z / tau), as ``dist`` (``DIST.py``'s
         ``inter_class_relation``/``intra_class_relation``), but with torchdistill's correlation: the
         cosine of the mean-centred vectors by ``torch.nn.functional.cosine_similarity(eps=1e-8)``
         (``dist`` follows hunto/DIST_KD, which adds 1e-8 to the product of the norms instead);
  channel  the mean over (n, h, w) of the Pearson correlation of the student's and the teacher's C-vectors
         at each position (1e-8 added to the product of the norms), weighted by iota;
  spatial  the maps summed over channels, (N, H*W): 1 - the mean over positions of the correlation of the
         two across the batch (DIST's intra-class relation on these maps), weighted by kappa.

So loss = DIST + iota * channel + kappa * spatial. Where code and paper part:

- The code adds the channel correlation itself (``+ iota * corr``), not 1 - corr, so minimising the loss
  pushes the student's channels to anti-correlate with the teacher's; its spatial term, like DIST, uses
  1 - corr. That code form is the default (``--distplus_channel code``); ``--distplus_channel paper`` gives
  iota * (1 - corr), DIST's loss carried to features as the paper's abstract describes it (the paper's
  equation itself could not be checked here).
- torchdistill's docstring calls iota the intra weight, kappa the channel weight and gamma the spatial
  weight; its code (followed here) uses gamma for intra, iota for the channel and kappa for the spatial term.
- The paper's other addition, the teacher acclimation strategy, is not in torchdistill's code and not here.

Features: ``feats[-2]``, the last stage's map (the official config reads torchvision ResNet's ``layer4``);
the two networks' maps must have the same shape (the official loss has no connector).
Where a map is constant across channels at a position the correlation there is 0 in both; torchdistill's
gradient there is NaN (the square root of 0), this one's finite (``pearson_correlation``'s norms).

Defaults: torchdistill's only DIST+ config, ``configs/sample/ilsvrc2012/dist_plus/resnet18_from_resnet34.yaml``
(ImageNet): cross-entropy weight 1, DIST+ weight 2, beta 2, gamma 2, iota 1, kappa 1, tau 1. It ships no
CIFAR-100 config, so those values are the defaults on every data set: ``-r 1 -a 0 -b 2``.
"""
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .DIST import inter_class_relation, intra_class_relation, pearson_correlation
from .flags import require
from .registry import register

__all__ = ['cosine_pearson', 'DISTPlus', 'DISTPlusDistiller']

SOURCE = 'torchdistill configs/sample/ilsvrc2012/dist_plus/resnet18_from_resnet34.yaml'


def cosine_pearson(a, b, eps=1e-8):
    """Row-wise Pearson correlation as torchdistill's DISTLoss: cosine_similarity of the mean-centred rows."""
    return F.cosine_similarity(a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True), dim=1, eps=eps)


class DISTPlus(nn.Module):
    """``DISTPlus(beta, gamma, iota, kappa, tau, channel)(z_s, z_t, f_s, f_t)``: logits (batch, classes) and
    feature maps (batch, C, H, W) of equal shapes; ``channel`` is 'code' (+corr) or 'paper' (1 - corr)."""

    def __init__(self, beta=1.0, gamma=1.0, iota=1.0, kappa=1.0, tau=1.0, channel='code'):
        super().__init__()
        self.beta, self.gamma, self.iota, self.kappa, self.tau = beta, gamma, iota, kappa, tau
        self.channel = channel

    @staticmethod
    def channel_correlation(f_s, f_t):
        """Mean over (n, h, w) of the correlation of the two C-vectors at each position."""
        c = f_s.shape[1]
        rows_s = f_s.transpose(1, -1).reshape(-1, c)
        rows_t = f_t.transpose(1, -1).reshape(-1, c)
        return pearson_correlation(rows_s, rows_t).mean()

    @staticmethod
    def spatial_relation(f_s, f_t):
        """1 - mean over positions of the correlation across the batch of the channel-summed maps."""
        return intra_class_relation(f_s.sum(dim=1).flatten(1), f_t.sum(dim=1).flatten(1), cosine_pearson)

    @full_precision
    def forward(self, z_s, z_t, f_s, f_t):
        y_s = (z_s / self.tau).softmax(dim=1)
        y_t = (z_t / self.tau).softmax(dim=1)
        dist = self.tau ** 2 * (self.beta * inter_class_relation(y_s, y_t, cosine_pearson)
                                + self.gamma * intra_class_relation(y_s, y_t, cosine_pearson))
        corr = self.channel_correlation(f_s, f_t)
        channel = corr if self.channel == 'code' else 1 - corr
        return dist + self.iota * channel + self.kappa * self.spatial_relation(f_s, f_t)


@register('distplus')
class DISTPlusDistiller(Distiller):
    """gamma * CE + alpha * KD + beta * DIST+; defaults CE 1, -b 2 (torchdistill's DIST+ config, the only one
    it ships, ImageNet's, for every data set). -b weighs the whole DIST+ term, --distplus_* its parts."""
    needs_feats = True
    default_weights = (1.0, 0.0, 2.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        shape_s, shape_t = tuple(probe_s.feats[-2].shape[1:]), tuple(probe_t.feats[-2].shape[1:])
        if len(shape_s) != 3 or shape_s != shape_t:
            raise KDZooError(f"distplus correlates the last stage maps of student and teacher position by position, "
                             f"so they must have one (C, H, W) shape; got {shape_s} and {shape_t}")
        self.criterion = DISTPlus(args.distplus_beta, args.distplus_gamma, args.distplus_iota, args.distplus_kappa,
                                  args.distplus_tau, args.distplus_channel)

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group(f'DIST+ (defaults: {SOURCE})')
        group.add_argument('--distplus_beta', type=float, default=2.0, help='weight of the inter-class relation')
        group.add_argument('--distplus_gamma', type=float, default=2.0, help='weight of the intra-class relation')
        group.add_argument('--distplus_iota', type=float, default=1.0, help='weight of the channel relation')
        group.add_argument('--distplus_kappa', type=float, default=1.0, help='weight of the spatial relation')
        group.add_argument('--distplus_tau', type=float, default=1.0, help='temperature of the logit part')
        group.add_argument('--distplus_channel', choices=('code', 'paper'), default='code',
                           help="channel term: 'code' adds the correlation itself, as torchdistill's DISTPlusLoss "
                                "(default); 'paper' adds 1 - correlation, DIST's loss on features")

    @staticmethod
    def settings(args):
        """Refuse values that leave the loss undefined."""
        require(args, positive=['distplus_tau'],
                non_negative=['distplus_beta', 'distplus_gamma', 'distplus_iota', 'distplus_kappa'])
        if args.batch_size == 1:
            raise KDZooError("DIST+'s intra-class and spatial relations correlate across the batch, so it needs "
                             "--batch_size 2 or more")

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.logits, out_t.logits, out_s.feats[-2], out_t.feats[-2])
