"""MobileNet (v1), the student of the ImageNet ResNet50 -> MobileNet pair, with mdistiller's parameter names.

``model.0`` is the stem convolution and ``model.1`` .. ``model.13`` the depthwise-separable blocks,
each ``[depthwise conv, BN, ReLU, pointwise conv, BN, ReLU]``; the classifier is ``fc``.
mdistiller's features are the outputs of model.3, model.5, model.11 and model.13 (128, 256, 512, 1024
channels: the last block at each resolution); f0 adds model.1's output (64 channels, stride 2) in front.
``preact`` takes each of them before its final ReLU, as mdistiller's ``preact_feats`` do.
"""
import torch.nn as nn
import torch.nn.functional as F

from ..features import FeatureNet

# (out_channels, stride) of the 13 depthwise-separable blocks that follow the 32-channel stem
SEPARABLE_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
# feature i is the output of model[STAGE_ENDS[i] - 1]
STAGE_ENDS = (2, 4, 6, 12, 14)


def conv_bn_relu(in_channels, out_channels, stride):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def depthwise_separable(in_channels, out_channels, stride):
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(FeatureNet):
    classifies_regions = True  # SDD's region logits and CAT-KD's class maps (models/features.py)

    def __init__(self, num_classes=1000):
        super().__init__()
        layers = [conv_bn_relu(3, 32, 2)]
        in_channels = 32
        for out_channels, stride in SEPARABLE_BLOCKS:
            layers.append(depthwise_separable(in_channels, out_channels, stride))
            in_channels = out_channels
        # mdistiller pools with AvgPool2d(7) inside ``model``; forward_head's global pooling is the same at
        # 224x224, has no parameters (so the state dict is unchanged) and also works on smaller inputs
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def get_feat_modules(self):
        return nn.ModuleList(self.model)

    def get_bn_before_relu(self):
        return [self.model[end - 1][-2] for end in STAGE_ENDS[1:]]

    def forward_stages(self, x, preact=False):
        feats, preact_feats = [], []
        start = 0
        for end in STAGE_ENDS:
            x = self.model[start:end - 1](x)
            stage_preact = self.model[end - 1][:-1](x)  # the stage's last block without its final ReLU
            x = F.relu(stage_preact)
            feats.append(x)
            preact_feats.append(stage_preact)
            start = end
        return (preact_feats if preact else feats) + [x]
