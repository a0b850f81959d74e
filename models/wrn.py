"""Wide ResNets (depth 6n+4, widen factor k) with pre-activation blocks, for 32x32 inputs.

Parameter names match RepDistiller's ``models/wrn.py`` (``blockN.layer.i``, ``convShortcut``, final BN
``bn1``), so its checkpoints load strictly.
"""
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet, init_weights


class BasicBlock(nn.Module):
    """BN-ReLU-conv twice; the shortcut is the input, or a 1x1 conv of the activated input when the width changes."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.same_width = in_planes == out_planes
        self.convShortcut = None if self.same_width else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        shortcut = x if self.same_width else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``nb_layers`` blocks under ``.layer``, the first one changing width and stride."""

    def __init__(self, nb_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(nb_layers)
        ])

    def forward(self, x):
        return self.layer(x)


def _batch_norm_without_update(bn, x):
    """``bn(x)`` with the statistics it would use now, but without touching its running statistics.

    RepDistiller gets these pre-activations by calling the next block's BN a second time, which in
    training mode folds the same batch into the running statistics twice.
    """
    if bn.training:
        return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    return bn(x)


class WideResNet(FeatureNet):
    """Stem conv, three stages of widths 16k/32k/64k (strides 1, 2, 2), BN-ReLU head, ``fc``."""
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, depth, widen_factor=1, num_classes=100):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f'WideResNet depth must be 6n+4, got {depth}')
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(blocks_per_stage, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(blocks_per_stage, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(blocks_per_stage, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

        init_weights(self, linear='zero_bias')

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self):
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward_stages(self, x, preact=False):
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        f3_pre = self.bn1(f3)
        pooled_map = F.relu(f3_pre)  # not in place: f3_pre is a reported feature
        if preact:
            # Stage outputs have no ReLU of their own: their "pre-activation" is the BN that the next
            # stage (or the head) puts in front of its ReLU.
            f1_pre = _batch_norm_without_update(self.block2.layer[0].bn1, f1)
            f2_pre = _batch_norm_without_update(self.block3.layer[0].bn1, f2)
            return [f0, f1_pre, f2_pre, f3_pre, pooled_map]
        return [f0, f1, f2, f3, pooled_map]


def wrn_16_1(num_classes=100, **kwargs):
    return WideResNet(16, widen_factor=1, num_classes=num_classes, **kwargs)


def wrn_16_2(num_classes=100, **kwargs):
    return WideResNet(16, widen_factor=2, num_classes=num_classes, **kwargs)


def wrn_28_4(num_classes=100, **kwargs):
    return WideResNet(28, widen_factor=4, num_classes=num_classes, **kwargs)


def wrn_40_1(num_classes=100, **kwargs):
    return WideResNet(40, widen_factor=1, num_classes=num_classes, **kwargs)


def wrn_40_2(num_classes=100, **kwargs):
    return WideResNet(40, widen_factor=2, num_classes=num_classes, **kwargs)
