"""ResNet50 for 32x32 inputs: a 3x3 stem without max-pool, then four bottleneck stages.

Parameter names match RepDistiller's ``models/resnetv2.py`` (``shortcut`` branches, ``linear``
classifier), so its checkpoints load strictly.
"""
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet, init_weights, stage_maps


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1, is_last=False):
        super().__init__()
        self.is_last = is_last
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # An empty Sequential is the identity and adds no parameters.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ResNet(FeatureNet):
    """Four bottleneck stages of 64/128/256/512 planes (strides 1, 2, 2, 2) and a ``linear`` classifier."""

    head_name = 'linear'
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, num_blocks, num_classes=100):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)

        init_weights(self)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for i in range(num_blocks):
            layers.append(Bottleneck(self.in_planes, planes, stride if i == 0 else 1,
                                     is_last=(i == num_blocks - 1)))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4])

    def get_bn_before_relu(self):
        return [self.layer1[-1].bn3, self.layer2[-1].bn3, self.layer3[-1].bn3, self.layer4[-1].bn3]

    def forward_stages(self, x, preact=False):
        return stage_maps(F.relu(self.bn1(self.conv1(x))), [self.layer1, self.layer2, self.layer3, self.layer4],
                          preact)


def ResNet50(num_classes=100, **kwargs):
    return ResNet([3, 4, 6, 3], num_classes=num_classes, **kwargs)
