"""ImageNet-size models (224x224 input), by the names SimKD and mdistiller use."""
from .resnet import (ResNet10x2, ResNet18, ResNet18x2, ResNet34, ResNet34x2, ResNet50, ResNet50_quarter,
                     resnext50_32x4d, wrn_50_2)
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2_Imagenet
from .shufflenetv2 import ShuffleV2_Imagenet

imagenet_model_dict = {
    'ResNet18': ResNet18,
    'ResNet34': ResNet34,
    'ResNet50': ResNet50,
    'ResNet50_quarter': ResNet50_quarter,  # NORM calls it resnet50_4S
    'resnext50_32x4d': resnext50_32x4d,
    'ResNet10x2': ResNet10x2,
    'ResNet18x2': ResNet18x2,
    'ResNet34x2': ResNet34x2,
    'wrn_50_2': wrn_50_2,
    'MobileNetV1': MobileNetV1,
    'MobileNetV2_Imagenet': MobileNetV2_Imagenet,
    'ShuffleV2_Imagenet': ShuffleV2_Imagenet,
}
