"""MobileNetV2 for 32x32 inputs, as RepDistiller (CRD) and SimKD build it.

``MobileNetV2`` is RepDistiller's ``mobile_half`` (expansion 6, width 0.5) and ``MobileNetV2_1_0`` is
SimKD's ``mobile_half_double`` (expansion 6, width 1.0). Parameter names match theirs, so their
checkpoints load strictly. The stem has stride 2 and the classifier always sees 1280 channels.
Block outputs are linear (no ReLU), so there are no separate pre-activation features: ``preact`` is
accepted and ignored, as in RepDistiller.
"""
import torch.nn as nn

from .features import FeatureNet, init_weights

# One row per stage: expansion (None means the model's expansion ratio), output channels at width 1,
# number of blocks, stride of the first block.
STAGES = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
LAST_CHANNELS = 1280


def conv_bn_act(in_channels, out_channels, kernel_size, stride=1, groups=1, activation=nn.ReLU):
    """Conv (no bias) -> BN -> activation as one Sequential (indices 0, 1, 2, as the checkpoints name them)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        activation(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; identity shortcut when shapes allow. ``branch``
    lays the layers out (the ImageNet model overrides it with torchvision's layout)."""

    def __init__(self, in_channels, out_channels, stride, expand_ratio):
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = self.branch(in_channels, in_channels * expand_ratio, out_channels, stride)

    @staticmethod
    def branch(in_channels, hidden, out_channels, stride):
        # One Sequential with indices 0..7: the checkpoints name parameters conv.0 ... conv.7.
        return nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class CifarMobileNetV2(FeatureNet):
    """Stem (stride 2), seven stages of inverted residuals in ``blocks``, 1x1 conv to 1280, pool, classifier."""
    head_name = 'classifier'
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, expand_ratio=6, width_mult=1.0, num_classes=100):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_act(3, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for expansion, width, num_blocks, stride in STAGES:
            out_channels = int(width * width_mult)
            stage = []
            for i in range(num_blocks):
                stage.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1,
                                              expansion or expand_ratio))
                channels = out_channels
            self.blocks.append(nn.Sequential(*stage))
        # Narrow models keep the full 1280 head; only widths above 1 widen it.
        self.last_channel = int(LAST_CHANNELS * width_mult) if width_mult > 1.0 else LAST_CHANNELS
        # RepDistiller pools conv2's output with a fixed window equal to the final map (input size / 16):
        # global pooling, which is what forward_head does.
        self.conv2 = conv_bn_act(channels, self.last_channel, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))

        init_weights(self, linear='normal')

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self):
        # The last BN of the stages whose outputs are reported as f1..f4.
        return [self.blocks[i][-1].conv[-1] for i in (1, 2, 4, 6)]

    def get_classifier(self):
        return self.classifier[0]

    def forward_stages(self, x, preact=False):
        f0 = self.conv1(x)
        f1 = self.blocks[1](self.blocks[0](f0))
        f2 = self.blocks[2](f1)
        f3 = self.blocks[4](self.blocks[3](f2))
        f4 = self.blocks[6](self.blocks[5](f3))
        return [f0, f1, f2, f3, f4, self.conv2(f4)]


def MobileNetV2(num_classes=100, **kwargs):
    return CifarMobileNetV2(expand_ratio=6, width_mult=0.5, num_classes=num_classes, **kwargs)


def MobileNetV2_1_0(num_classes=100, **kwargs):
    return CifarMobileNetV2(expand_ratio=6, width_mult=1.0, num_classes=num_classes, **kwargs)


# RepDistiller's and mdistiller's name for the constructor of MobileNetV2 (``from models.mobilenetv2
# import mobile_half``); ``--model mobile_half`` is read as MobileNetV2 (models.registry.ALIASES).
mobile_half = MobileNetV2
