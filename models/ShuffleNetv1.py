"""ShuffleNet (v1) for 32x32 inputs, as RepDistiller builds it (``ShuffleV1``: groups 3, 240/480/960).

Parameter names match RepDistiller's ``models/ShuffleNetv1.py`` (classifier ``linear``), so its
checkpoints load strictly. The last block of each stage also returns its pre-ReLU output, which
``forward(..., preact=True)`` reports instead of the post-ReLU stage output.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet, stage_maps

STEM_CHANNELS = 24


def channel_shuffle(x, groups):
    """Interleave the channels of ``groups`` groups so the next grouped conv mixes them."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class Bottleneck(nn.Module):
    """Grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1; stride 2 concatenates an average-pooled shortcut.

    ``squeeze_groups`` is the group count of the first 1x1 conv: the block right after the 24-channel
    stem uses 1, the rest use ``groups``.
    """

    def __init__(self, in_planes, out_planes, stride, groups, squeeze_groups, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.stride = stride
        self.squeeze_groups = squeeze_groups
        mid_planes = out_planes // 4
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=squeeze_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1,
                               groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.squeeze_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            preact = out + x
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ShuffleNet(FeatureNet):
    """1x1 stem, three stages (each starting with stride 2), global pool, ``linear``."""
    head_name = 'linear'
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, out_planes, num_blocks, groups, num_classes=100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.in_planes = STEM_CHANNELS
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes, num_blocks, groups):
        layers = []
        for i in range(num_blocks):
            # The stride-2 block concatenates its input, so its own branch makes only the missing channels.
            branch_planes = out_planes - self.in_planes if i == 0 else out_planes
            squeeze_groups = 1 if self.in_planes == STEM_CHANNELS else groups
            layers.append(Bottleneck(self.in_planes, branch_planes, stride=2 if i == 0 else 1, groups=groups,
                                     squeeze_groups=squeeze_groups, is_last=(i == num_blocks - 1)))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def forward_stages(self, x, preact=False):
        # RepDistiller pools the last stage's output 4x4, the whole map of a 32x32 input: global pooling.
        return stage_maps(F.relu(self.bn1(self.conv1(x))), [self.layer1, self.layer2, self.layer3], preact)


def ShuffleV1(num_classes=100, **kwargs):
    return ShuffleNet(out_planes=[240, 480, 960], num_blocks=[4, 8, 4], groups=3, num_classes=num_classes,
                      **kwargs)
