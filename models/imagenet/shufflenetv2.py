"""SimKD's ImageNet ShuffleNetV2 1.0x: torchvision's ``shufflenet_v2_x1_0`` layout and parameter names.

``conv1`` (stem), ``stage2`` .. ``stage4`` (4, 8, 4 units), ``conv5`` (1x1 to 1024 channels) and ``fc``.
Features follow SimKD: the max-pooled stem (24 channels), stage2 (116), stage3 (232), then conv5 applied
to stage4 (1024; it takes the place of stage4's own output, so feats[-2] is the map that is pooled into
the classifier), then the pooled vector. ``preact`` is accepted and changes nothing.
"""
import torch
import torch.nn as nn

from helper.errors import KDZooError
from ..features import FeatureNet

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = (116, 232, 464)


def channel_shuffle(x, groups):
    """Interleave the channels of ``groups`` equal groups: with 2 groups, [a0 a1 a2 b0 b1 b2] -> [a0 b0 a1 b1 a2 b2]."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def depthwise_conv(channels, stride):
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def conv1x1_bn_relu(in_channels, out_channels):
    return [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    """ShuffleNetV2 unit. Stride 1: half the channels pass through and ``branch2`` transforms the other half.
    Stride 2: ``branch1`` and ``branch2`` both transform the whole input, each to half the output channels."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        branch_channels = out_channels // 2
        self.branch1 = None
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise_conv(in_channels, stride), nn.BatchNorm2d(in_channels),
                *conv1x1_bn_relu(in_channels, branch_channels),
            )
        self.branch2 = nn.Sequential(
            *conv1x1_bn_relu(in_channels if stride > 1 else branch_channels, branch_channels),
            depthwise_conv(branch_channels, stride), nn.BatchNorm2d(branch_channels),
            *conv1x1_bn_relu(branch_channels, branch_channels),
        )

    def forward(self, x):
        if self.branch1 is None:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(transformed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(FeatureNet):
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 24
        stages = []
        for repeats, out_channels in zip(STAGE_REPEATS, STAGE_CHANNELS):
            units = [InvertedResidual(in_channels, out_channels, 2)]
            units += [InvertedResidual(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(*conv1x1_bn_relu(in_channels, 1024))
        self.fc = nn.Linear(1024, num_classes)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.maxpool, self.stage2, self.stage3, self.stage4, self.conv5])

    def get_bn_before_relu(self):
        raise KDZooError("ShuffleV2_Imagenet has no BatchNorm in front of each stage's final ReLU (half of every "
                         "stage output bypasses it), so it cannot be the OFD teacher; choose a ResNet or "
                         "MobileNet teacher")

    def forward_stages(self, x, preact=False):
        f0 = self.maxpool(self.conv1(x))
        f1 = self.stage2(f0)
        f2 = self.stage3(f1)
        f3 = self.conv5(self.stage4(f2))
        return [f0, f1, f2, f3, f3]


def ShuffleV2_Imagenet(num_classes=1000, **kwargs):
    return ShuffleNetV2(num_classes=num_classes, **kwargs)
