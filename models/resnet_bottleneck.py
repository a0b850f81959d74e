"""ResNet-110 as the L-MCL and MCL repos build it: bottleneck blocks (9n+2, n = 12), widths 16/32/64 x 4.

Not RepDistiller's ``resnet110`` (basic blocks, 1.73M parameters, 64-d embedding): this one has 1.17M
parameters and a 256-d embedding. The L-MCL tables' ResNet-110 rows (baseline 75.29) use it.
"""
from .resnet import NARROW, ResNet


def resnet110_bottleneck(num_classes=100, **kwargs):
    return ResNet(110, NARROW, 'bottleneck', num_classes=num_classes, **kwargs)
