"""ImageNet-size models (224x224 input), by the names SimKD and mdistiller use."""
from .resnet import ResNet18, ResNet34, ResNet50, ResNet50_quarter
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2_Imagenet
from .shufflenetv2 import ShuffleV2_Imagenet

imagenet_model_dict = {
    'ResNet18': ResNet18,
    'ResNet34': ResNet34,
    'ResNet50': ResNet50,
    'ResNet50_quarter': ResNet50_quarter,  # NORM calls it resnet50_4S
    'MobileNetV1': MobileNetV1,
    'MobileNetV2_Imagenet': MobileNetV2_Imagenet,
    'ShuffleV2_Imagenet': ShuffleV2_Imagenet,
}
