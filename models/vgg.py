"""VGG with batch norm for 32x32 inputs: five conv blocks, no hidden FC layers, one ``classifier``.

These are the ``*_bn`` models that RepDistiller registers as vgg8/11/13/16/19; parameter names match its
``models/vgg.py`` so its checkpoints load strictly. Each block is Conv-BN-ReLU repeated, but without its
final ReLU: ``forward`` applies that one itself so it can report the pre-ReLU output too.
"""
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet, init_weights


def _make_block(widths, in_channels):
    layers = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        in_channels = width
    # The ReLU modules stay in the Sequential because they fix the indices in the parameter names.
    return nn.Sequential(*layers[:-1])


class VGG(FeatureNet):
    """``widths`` gives the conv widths of each of the five blocks; blocks 0-3 are followed by 2x2 max-pool."""
    head_name = 'classifier'
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, widths, num_classes=100):
        super().__init__()
        self.block0 = _make_block(widths[0], 3)
        self.block1 = _make_block(widths[1], widths[0][-1])
        self.block2 = _make_block(widths[2], widths[1][-1])
        self.block3 = _make_block(widths[3], widths[2][-1])
        self.block4 = _make_block(widths[4], widths[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

        init_weights(self, linear='normal', conv_bias=True)

    def get_feat_modules(self):
        return nn.ModuleList([self.block0, self.pool0, self.block1, self.pool1, self.block2, self.pool2,
                              self.block3, self.pool3, self.block4, self.pool4])

    def get_bn_before_relu(self):
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward_stages(self, x, preact=False):
        # At 32x32 block3 already works on 4x4 maps, so pool3 runs only for 64x64 inputs, as in RepDistiller.
        use_pool3 = x.shape[2] == 64
        f0 = F.relu(self.block0(x))
        f1_pre = self.block1(self.pool0(f0))
        f1 = F.relu(f1_pre)
        f2_pre = self.block2(self.pool1(f1))
        f2 = F.relu(f2_pre)
        f3_pre = self.block3(self.pool2(f2))
        f3 = F.relu(f3_pre)
        f4_pre = self.block4(self.pool3(f3) if use_pool3 else f3)
        f4 = F.relu(f4_pre)
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, f4_pre, f4]
        return [f0, f1, f2, f3, f4, f4]


# Conv widths per block, RepDistiller's configurations 'S', 'A', 'B', 'D' and 'E'.
WIDTHS = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def vgg8(num_classes=100, **kwargs):
    return VGG(WIDTHS[8], num_classes=num_classes, **kwargs)


def vgg11(num_classes=100, **kwargs):
    return VGG(WIDTHS[11], num_classes=num_classes, **kwargs)


def vgg13(num_classes=100, **kwargs):
    return VGG(WIDTHS[13], num_classes=num_classes, **kwargs)


def vgg16(num_classes=100, **kwargs):
    return VGG(WIDTHS[16], num_classes=num_classes, **kwargs)


def vgg19(num_classes=100, **kwargs):
    return VGG(WIDTHS[19], num_classes=num_classes, **kwargs)
