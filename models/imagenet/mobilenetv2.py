"""SimKD's ImageNet MobileNetV2 (width 1.0): torchvision's ``mobilenet_v2`` layout and parameter names.

``features.0`` is the stem, ``features.1`` .. ``features.17`` the inverted residual blocks and
``features.18`` the 1x1 convolution to 1280 channels; the classifier is ``classifier.1``.
Features follow SimKD: the outputs of features 0, 3, 6, 13 and 17 (32, 24, 32, 96, 320 channels,
strides 2 to 32), then the pooled 1280-wide vector. The stage outputs end in a BatchNorm with no ReLU
after it, so ``preact`` changes nothing.
"""
import torch.nn as nn

from ..features import FeatureNet
from ..mobilenetv2 import InvertedResidual as CifarInvertedResidual, conv_bn_act

# (expansion, out_channels, repeats, stride of the first repeat), as in the MobileNetV2 paper
BLOCK_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# feature i is the output of features[STAGE_ENDS[i] - 1]
STAGE_ENDS = (1, 4, 7, 14, 18)


def conv_bn_relu6(in_channels, out_channels, kernel_size=3, stride=1, groups=1):
    return conv_bn_act(in_channels, out_channels, kernel_size, stride, groups, activation=nn.ReLU6)


class InvertedResidual(CifarInvertedResidual):
    """The CIFAR block in torchvision's layout: ReLU6, the expansion skipped at ratio 1, and each conv-BN-ReLU6
    a Sequential of its own (``conv.0.0``, ``conv.0.1``, ...)."""

    @staticmethod
    def branch(in_channels, hidden, out_channels, stride):
        layers = [] if hidden == in_channels else [conv_bn_relu6(in_channels, hidden, kernel_size=1)]
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        return nn.Sequential(*layers)


class MobileNetV2(FeatureNet):
    head_name = 'classifier'
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, num_classes=1000):
        super().__init__()
        layers = [conv_bn_relu6(3, 32, stride=2)]
        in_channels = 32
        for expansion, out_channels, repeats, first_stride in BLOCK_SETTINGS:
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                layers.append(InvertedResidual(in_channels, out_channels, stride, expansion))
                in_channels = out_channels
        layers.append(conv_bn_relu6(in_channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        # torchvision's initialisation
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out')
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def get_feat_modules(self):
        return nn.ModuleList(self.features)

    def get_bn_before_relu(self):
        return [self.features[end - 1].conv[-1] for end in STAGE_ENDS[1:]]

    def get_classifier(self):
        return self.classifier[1]

    def forward_stages(self, x, preact=False):
        feats = []
        start = 0
        for end in STAGE_ENDS:
            x = self.features[start:end](x)
            feats.append(x)
            start = end
        return feats + [self.features[start:](x)]


def MobileNetV2_Imagenet(num_classes=1000, **kwargs):
    return MobileNetV2(num_classes=num_classes, **kwargs)
