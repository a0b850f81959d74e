"""ShuffleNetV2 for 32x32 inputs, as RepDistiller and SimKD build it, at net sizes 0.5, 1 and 1.5.

Parameter names match their ``models/ShuffleNetv2.py`` (classifier ``linear``), so their checkpoints load
strictly. The last block of each stage also returns its pre-ReLU output, which
``forward(..., preact=True)`` reports instead of the post-ReLU stage output.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet, stage_maps

STEM_CHANNELS = 24

# net size -> (stage widths, head width), blocks per stage after each stage's down-sampling block.
CONFIGS = {
    0.5: ((48, 96, 192), 1024),
    1: ((116, 232, 464), 1024),
    1.5: ((176, 352, 704), 1024),
}
NUM_BLOCKS = (3, 7, 3)


def channel_shuffle(x, groups=2):
    """Interleave the channels of ``groups`` groups so the two branches mix in the next block."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class BasicBlock(nn.Module):
    """Split the channels in half, pass one half through, transform the other, concatenate, shuffle."""

    def __init__(self, channels, is_last=False):
        super().__init__()
        self.is_last = is_last
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x):
        half = x.size(1) // 2
        kept, transformed = x[:, :half], x[:, half:]
        out = F.relu(self.bn1(self.conv1(transformed)))
        out = self.bn2(self.conv2(out))
        branch_preact = self.bn3(self.conv3(out))
        out = channel_shuffle(torch.cat([kept, F.relu(branch_preact)], 1))
        if not self.is_last:
            return out
        # RepDistiller reports the pre-activation before the shuffle, so its channel order differs from out's.
        return out, torch.cat([kept, branch_preact], 1)


class DownBlock(nn.Module):
    """Stride-2 block: two branches each make half the output channels, then concatenate and shuffle."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid_channels = out_channels // 2
        # left branch: 3x3 depthwise (stride 2), 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1,
                               groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        # right branch: 1x1, 3x3 depthwise (stride 2), 1x1
        self.conv3 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv4 = nn.Conv2d(mid_channels, mid_channels, kernel_size=3, stride=2, padding=1,
                               groups=mid_channels, bias=False)
        self.bn4 = nn.BatchNorm2d(mid_channels)
        self.conv5 = nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_channels)

    def forward(self, x):
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(FeatureNet):
    """1x1 stem, three stages (DownBlock then BasicBlocks), 1x1 conv to the head width, global pool, ``linear``."""
    head_name = 'linear'
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, net_size=1, num_classes=100):
        super().__init__()
        if net_size not in CONFIGS:
            raise ValueError(f"ShuffleNetV2 has no net size {net_size}; use one of {sorted(CONFIGS)}")
        stage_channels, head_channels = CONFIGS[net_size]
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.in_channels = STEM_CHANNELS
        self.layer1 = self._make_layer(stage_channels[0], NUM_BLOCKS[0])
        self.layer2 = self._make_layer(stage_channels[1], NUM_BLOCKS[1])
        self.layer3 = self._make_layer(stage_channels[2], NUM_BLOCKS[2])
        self.conv2 = nn.Conv2d(stage_channels[2], head_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(head_channels)
        self.linear = nn.Linear(head_channels, num_classes)

    def _make_layer(self, out_channels, num_blocks):
        layers = [DownBlock(self.in_channels, out_channels)]
        for i in range(num_blocks):
            layers.append(BasicBlock(out_channels, is_last=(i == num_blocks - 1)))
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def forward_stages(self, x, preact=False):
        maps = stage_maps(F.relu(self.bn1(self.conv1(x))), [self.layer1, self.layer2, self.layer3], preact)
        # RepDistiller pools the head's output 4x4, the whole map of a 32x32 input: global pooling.
        maps[-1] = F.relu(self.bn2(self.conv2(maps[-1])))
        return maps


def ShuffleV2_0_5(num_classes=100, **kwargs):
    return ShuffleNetV2(net_size=0.5, num_classes=num_classes, **kwargs)


def ShuffleV2(num_classes=100, **kwargs):
    return ShuffleNetV2(net_size=1, num_classes=num_classes, **kwargs)


def ShuffleV2_1_5(num_classes=100, **kwargs):
    return ShuffleNetV2(net_size=1.5, num_classes=num_classes, **kwargs)
