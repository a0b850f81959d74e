"""ImageNet ResNets with torchvision's parameter names, so torchvision checkpoints load with strict=True.

Features follow SimKD: f0 is the stem output after ReLU and max-pool (64 channels, stride 4), f1..f4
are the outputs of layer1..layer4, then the pooled vector. With ``preact=True`` each of f0..f4 is
taken before its final ReLU, as mdistiller's ImageNet ResNet gives them (mdistiller takes its stem
feature before the max-pool; here it is after, at the same point as SimKD's f0).

As in mdistiller, each block ends without the ReLU that ends a torchvision block and applies it to
its input instead, so every block and stage returns its pre-activation output. The arithmetic and
the parameters are torchvision's.
"""
import torch.nn as nn
import torch.nn.functional as F

from ..features import FeatureNet


def conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """What both blocks compute: the ReLU of the input (the one that ends the previous torchvision block),
    then conv-BN pairs with a ReLU between them (``conv_bn_pairs``), plus the shortcut."""

    def conv_bn_pairs(self):
        raise NotImplementedError

    @property
    def last_bn(self):
        """The BN in front of the ReLU that follows the block (OFD's margins)."""
        return self.conv_bn_pairs()[-1][1]

    def forward(self, x):
        x = F.relu(x)  # not in place: the input may be a stage's pre-activation feature
        out = x
        *inner, (conv, bn) = self.conv_bn_pairs()
        for inner_conv, inner_bn in inner:
            out = F.relu(inner_bn(inner_conv(out)), inplace=True)
        out = bn(conv(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions plus a shortcut (ResNet18/34)."""
    expansion = 1

    def __init__(self, in_channels, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def conv_bn_pairs(self):
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "v1.5"), 1x1 expand, plus a shortcut.

    The inner width is torchvision's ``int(planes * base_width / 64) * groups``: ``planes`` for ResNet50,
    twice it for Wide ResNet-50-2 (base width 128) and for ResNeXt-50 32x4d (32 groups of 4 per 64)."""
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def conv_bn_pairs(self):
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]


def make_stage(block, in_channels, planes, num_blocks, stride, **block_options):
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    blocks = [block(in_channels, planes, stride, downsample, **block_options)]
    blocks += [block(out_channels, planes, **block_options) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNet(FeatureNet):
    """torchvision's ResNet layout; ``stage_planes`` narrows or widens the four stages (the stem stays 64
    wide), ``block_options`` (groups, base_width) shape the bottlenecks' inner width."""
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, block, blocks_per_stage, num_classes=1000, stage_planes=(64, 128, 256, 512),
                 **block_options):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        stages = []
        for index, (planes, num_blocks) in enumerate(zip(stage_planes, blocks_per_stage)):
            stages.append(make_stage(block, in_channels, planes, num_blocks, stride=1 if index == 0 else 2,
                                     **block_options))
            in_channels = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_channels, num_classes)

        # torchvision's initialisation; BatchNorm and Linear keep PyTorch's defaults, as there
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')

    def stages(self):
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.maxpool, *self.stages()])

    def get_bn_before_relu(self):
        return [stage[-1].last_bn for stage in self.stages()]

    def forward_stages(self, x, preact=False):
        # ReLU and max-pool commute exactly, so pooling first gives f0 before its ReLU; layer1 applies it
        x = self.maxpool(self.bn1(self.conv1(x)))
        preact_feats = [x]
        for stage in self.stages():
            x = stage(x)
            preact_feats.append(x)
        pooled_map = F.relu(x)
        if preact:
            return preact_feats + [pooled_map]
        return [F.relu(f) for f in preact_feats[:-1]] + [pooled_map, pooled_map]


def ResNet18(num_classes=1000, **kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def ResNet34(num_classes=1000, **kwargs):
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def ResNet50(num_classes=1000, **kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def ResNet50_quarter(num_classes=1000, **kwargs):
    """NORM's ``resnet50_4S`` backbone: ResNet50 with every stage a quarter as wide (output 512 channels)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, stage_planes=(16, 32, 64, 128), **kwargs)


# The SimKD repo's wider ImageNet ResNets (its models/__init__.py names), with torchvision's parameter names.
# Its "x2" ResNets are BasicBlock nets whose four stages are twice as wide (128 .. 1024 channels; the stem
# stays 64, so layer1 opens with a 1x1 shortcut); wrn_50_2 is torchvision's wide_resnet50_2 and
# resnext50_32x4d torchvision's resnext50_32x4d, both keeping ResNet50's 256 .. 2048 stage outputs.
WIDE_BASIC_PLANES = (128, 256, 512, 1024)


def ResNet10x2(num_classes=1000, **kwargs):
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, stage_planes=WIDE_BASIC_PLANES, **kwargs)


def ResNet18x2(num_classes=1000, **kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, stage_planes=WIDE_BASIC_PLANES, **kwargs)


def ResNet34x2(num_classes=1000, **kwargs):
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, stage_planes=WIDE_BASIC_PLANES, **kwargs)


def wrn_50_2(num_classes=1000, **kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, base_width=128, **kwargs)


def resnext50_32x4d(num_classes=1000, **kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, groups=32, base_width=4, **kwargs)
