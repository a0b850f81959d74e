"""CIFAR ResNets of depth 6n+2 (BasicBlock) or 9n+2 (Bottleneck), with three stages.

Parameter names match RepDistiller's ``models/resnet.py`` (and SimKD's, which uses the same names), so
their checkpoints load strictly. The last block of each stage also returns its pre-ReLU output, which
``forward(..., preact=True)`` reports instead of the post-ReLU stage output.
"""
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet, init_weights, stage_maps


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        out = F.relu(preact)  # not in place: preact must survive for distillers that read it
        return (out, preact) if self.is_last else out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ResNet(FeatureNet):
    """Stem conv, three stages of ``num_filters[1:]`` widths (strides 1, 2, 2), global pool, ``fc``."""
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, depth, num_filters, block_name='basicblock', num_classes=100):
        super().__init__()
        if block_name.lower() == 'basicblock':
            block, per_block = BasicBlock, 2
        elif block_name.lower() == 'bottleneck':
            block, per_block = Bottleneck, 3
        else:
            raise ValueError(f"block_name must be 'basicblock' or 'bottleneck', got {block_name!r}")
        if (depth - 2) % (3 * per_block) != 0:
            raise ValueError(f'depth {depth} does not fit {block_name}: it must be {3 * per_block}n+2')
        blocks_per_stage = (depth - 2) // (3 * per_block)

        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, num_filters[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(block, num_filters[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], blocks_per_stage, stride=2)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)

        init_weights(self)

    def _make_layer(self, block, planes, num_blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, is_last=(num_blocks == 1))]
        self.inplanes = planes * block.expansion
        for i in range(1, num_blocks):
            layers.append(block(self.inplanes, planes, is_last=(i == num_blocks - 1)))
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self):
        if isinstance(self.layer1[0], Bottleneck):
            return [self.layer1[-1].bn3, self.layer2[-1].bn3, self.layer3[-1].bn3]
        return [self.layer1[-1].bn2, self.layer2[-1].bn2, self.layer3[-1].bn2]

    def forward_stages(self, x, preact=False):
        return stage_maps(self.relu(self.bn1(self.conv1(x))), [self.layer1, self.layer2, self.layer3], preact)


# Widths [stem, stage1, stage2, stage3]. "xK" multiplies the stage widths by K. The x4 stem is 32 wide,
# not 64: RepDistiller chose that and SimKD kept it, so their checkpoints need it.
NARROW = [16, 16, 32, 64]
DOUBLE = [16, 32, 64, 128]
QUAD = [32, 64, 128, 256]


def resnet8(num_classes=100, **kwargs):
    return ResNet(8, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet14(num_classes=100, **kwargs):
    return ResNet(14, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet20(num_classes=100, **kwargs):
    return ResNet(20, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet32(num_classes=100, **kwargs):
    return ResNet(32, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet38(num_classes=100, **kwargs):
    return ResNet(38, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet44(num_classes=100, **kwargs):
    return ResNet(44, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet56(num_classes=100, **kwargs):
    return ResNet(56, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet110(num_classes=100, **kwargs):
    return ResNet(110, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet116(num_classes=100, **kwargs):
    return ResNet(116, NARROW, 'basicblock', num_classes=num_classes, **kwargs)


def resnet14x2(num_classes=100, **kwargs):
    return ResNet(14, DOUBLE, 'basicblock', num_classes=num_classes, **kwargs)


def resnet38x2(num_classes=100, **kwargs):
    return ResNet(38, DOUBLE, 'basicblock', num_classes=num_classes, **kwargs)


def resnet110x2(num_classes=100, **kwargs):
    return ResNet(110, DOUBLE, 'basicblock', num_classes=num_classes, **kwargs)


def resnet8x4(num_classes=100, **kwargs):
    return ResNet(8, QUAD, 'basicblock', num_classes=num_classes, **kwargs)


def resnet14x4(num_classes=100, **kwargs):
    return ResNet(14, QUAD, 'basicblock', num_classes=num_classes, **kwargs)


def resnet32x4(num_classes=100, **kwargs):
    return ResNet(32, QUAD, 'basicblock', num_classes=num_classes, **kwargs)


def resnet38x4(num_classes=100, **kwargs):
    return ResNet(38, QUAD, 'basicblock', num_classes=num_classes, **kwargs)
