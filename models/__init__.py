"""Model zoo: every architecture by the name RepDistiller, SimKD and the seed papers use.

``model_dict`` holds the CIFAR-size models (32x32 input), ``imagenet_model_dict`` the 224x224 ones. Each
constructor is called as ``f(num_classes=...)`` and follows RepDistiller's forward contract:
``model(x, is_feat=False, preact=False)`` gives the logits, or ``(feats, logits)`` with
``feats = [f0, ..., fK, pooled]``. Every model is a ``features.FeatureNet``: ``forward_stages(x, preact)``
gives ``[f0, ..., fK, m]`` with ``m`` the map pooled into the classifier, ``forward_features(x)`` gives ``m``
alone and ``forward_head(m)`` the logits (timm's names).
"""
from .resnet import (resnet8, resnet14, resnet20, resnet32, resnet38, resnet44, resnet56, resnet110,
                     resnet116, resnet8x4, resnet32x4, resnet14x2, resnet38x2, resnet110x2, resnet14x4,
                     resnet38x4)
from .resnetv2 import ResNet50
from .wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2, wrn_28_4
from .vgg import vgg8, vgg11, vgg13, vgg16, vgg19
from .mobilenetv2 import MobileNetV2, MobileNetV2_1_0, mobile_half
from .ShuffleNetv1 import ShuffleV1
from .ShuffleNetv2 import ShuffleV2, ShuffleV2_0_5, ShuffleV2_1_5
from .hcgnet import hcgnet_A1, hcgnet_A2
from .resnet_bottleneck import resnet110_bottleneck
from .imagenet import imagenet_model_dict

model_dict = {
    # RepDistiller's 22 names
    'resnet8': resnet8, 'resnet14': resnet14, 'resnet20': resnet20, 'resnet32': resnet32,
    'resnet44': resnet44, 'resnet56': resnet56, 'resnet110': resnet110,
    'resnet8x4': resnet8x4, 'resnet32x4': resnet32x4, 'ResNet50': ResNet50,
    'wrn_16_1': wrn_16_1, 'wrn_16_2': wrn_16_2, 'wrn_40_1': wrn_40_1, 'wrn_40_2': wrn_40_2,
    'vgg8': vgg8, 'vgg11': vgg11, 'vgg13': vgg13, 'vgg16': vgg16, 'vgg19': vgg19,
    'MobileNetV2': MobileNetV2, 'ShuffleV1': ShuffleV1, 'ShuffleV2': ShuffleV2,
    # the SimKD repo's extra CIFAR names
    'resnet38': resnet38, 'resnet116': resnet116, 'resnet14x2': resnet14x2, 'resnet38x2': resnet38x2,
    'resnet110x2': resnet110x2, 'resnet14x4': resnet14x4, 'resnet38x4': resnet38x4,
    'MobileNetV2_1_0': MobileNetV2_1_0, 'ShuffleV2_1_5': ShuffleV2_1_5,
    # used by the online-learning (L-MCL) tables
    'wrn_28_4': wrn_28_4, 'ShuffleV2_0_5': ShuffleV2_0_5,
    'hcgnet_A1': hcgnet_A1, 'hcgnet_A2': hcgnet_A2, 'resnet110_bottleneck': resnet110_bottleneck,
    # RepDistiller's and mdistiller's constructor name for MobileNetV2 (models.registry.ALIASES)
    'mobile_half': mobile_half,
}

__all__ = ['model_dict', 'imagenet_model_dict']
