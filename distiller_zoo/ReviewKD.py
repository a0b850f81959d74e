"""ReviewKD: Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021), as mdistiller runs it.

Levels are the stage maps feats[1:-1] and the pooled vector as a 1x1 map, of both networks. From the
deepest level to the shallowest, an attention-based fusion block (``ABF``) maps the student's level to a
common width, fuses it with the fused map of the level below it (nearest-upsampled, weighted by two
learned spatial attention maps) and predicts the teacher's level with a 3x3 conv + BN. The hierarchical
context loss (``hcl_loss``) compares each prediction with the teacher's pre-ReLU map at full size and
average-pooled to 4x4, 2x2 and 1x1; it is ramped in over --reviewkd_warmup epochs.

Where this follows mdistiller rather than the paper or dvlab-research/ReviewKD:
  * student maps are post-ReLU on CIFAR (mdistiller's STU_PREACT False) and pre-ReLU on ImageNet (its
    ImageNet configs), teacher maps always pre-ReLU;
  * CE 1 + 5.0 * HCL with a 20-epoch warm-up on CIFAR for every pair (reviewkd.yaml), where the original
    scripts also use 8.0 (resnet32x4 -> ShuffleV2), 0.6 (resnet56 -> resnet20) and 1.0 (resnet110 ->
    resnet32) with batch 128 and lr 0.1; pass -b for those;
  * channels and sizes come from the probe forward of the two networks, not from per-pair tables; the
    fusion width is min(512, channels of the student's pooled vector), as the code (its MAX_MID_CHANNEL
    option is never read). When one network has more stages, the deepest levels are paired.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.precision import at_least_fp32
from helper.recipe import scheduled
from .base import Distiller
from .flags import add_ramp_arguments, settle_ramp
from .registry import register

__all__ = ['ABF', 'hcl_loss', 'ReviewKD']

# configs/imagenet/*/reviewkd.yaml: REVIEWKD_WEIGHT 1.0 (ResNet34 -> ResNet18), 8.0 (ResNet50 -> MobileNet)
IMAGENET_WEIGHT = {('ResNet50', 'MobileNetV1'): 8.0, ('ResNet50', 'MobileNetV2_Imagenet'): 8.0}


class ABF(nn.Module):
    """Attention-based fusion of one level: ``ABF(in_channels, mid_channels, out_channels, fuse)``.

    ``forward(x, residual, out_size)`` returns (prediction of the teacher's map, fused map handed to the
    next shallower level). ``residual`` is the deeper level's fused map (None for the deepest level,
    built with ``fuse=False``); the fused map is resized to ``out_size``, the teacher's size.
    """

    def __init__(self, in_channels, mid_channels, out_channels, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual=None, out_size=None):
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode='nearest')
            attention = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * attention[:, :1] + residual * attention[:, 1:]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode='nearest')
        return self.conv2(x), x


def hcl_loss(fstudent, fteacher):
    """Sum over levels of the hierarchical context loss: (MSE + sum_k w_k MSE(pool_k s, pool_k t)) /
    (1 + sum_k w_k) over k = 4, 2, 1 with k < the map height, w halving from 1/2 at each k used."""
    total = 0.0
    for fs, ft in zip(fstudent, fteacher):
        fs, ft = at_least_fp32(fs), at_least_fp32(ft)
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= fs.shape[2]:
                continue
            weight /= 2
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            weights += weight
        total = total + loss / weights
    return total


def review_levels(feats):
    """A network's review levels: its stage maps and the pooled vector as a 1x1 map."""
    return [*feats[1:-1], feats[-1][:, :, None, None]]


@register('reviewkd')
class ReviewKD(Distiller):
    """gamma * CE + alpha * KD + beta * min(epoch / warmup, 1) * HCL(ABF outputs, teacher's pre-ReLU levels).

    Defaults: CE 1, -b 5.0, warm-up 20 (ImageNet: -b 1.0, or 8.0 for ResNet50 -> MobileNet; warm-up 1).
    The teacher's levels are always its pre-ReLU maps (``teacher_preact``); the student's are pre-ReLU on
    ImageNet only, as mdistiller's ResNet/MobileNet feature dicts give them.
    """
    needs_feats = True
    teacher_preact = True
    default_weights = (1.0, 0.0, 5.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.warmup = scheduled(args, 'reviewkd_warmup')
        self.preact = args.dataset == 'imagenet'  # the student's maps; the teacher's are always pre-ReLU
        levels_s, levels_t = review_levels(probe_s.feats), review_levels(probe_t.feats)
        self.depth = min(len(levels_s), len(levels_t))
        levels_s, levels_t = levels_s[-self.depth:], levels_t[-self.depth:]
        mid = min(512, levels_s[-1].shape[1])
        # deepest level first, as they run (and as mdistiller's state_dict names them)
        self.abfs = nn.ModuleList(ABF(s.shape[1], mid, t.shape[1], fuse=i > 0)
                                  for i, (s, t) in enumerate(zip(levels_s[::-1], levels_t[::-1])))
        self.out_sizes = [tuple(t.shape[-2:]) for t in levels_t[::-1]]

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('ReviewKD')
        add_ramp_arguments(group, 'reviewkd', 'review loss', temperature=False)

    @classmethod
    def defaults_for(cls, args):
        cls.settings(args)
        if args.dataset == 'imagenet':
            return (1.0, 0.0, IMAGENET_WEIGHT.get((args.model_t, args.model_s), 1.0))
        return cls.default_weights

    @staticmethod
    def settings(args):
        settle_ramp(args, 'reviewkd', temperature=False)

    def review(self, feats_s):
        """The ABF predictions of the teacher's levels, shallowest first."""
        levels = review_levels(feats_s)[-self.depth:][::-1]
        outputs, fused = [], None
        for abf, level, size in zip(self.abfs, levels, self.out_sizes):
            out, fused = abf(level, fused, size)
            outputs.insert(0, out)
        return outputs

    def method_loss(self, out_s, out_t, batch, epoch):
        targets = review_levels(out_t.feats)[-self.depth:]
        return hcl_loss(self.review(out_s.feats), targets)  # ramped in by Distiller.losses
