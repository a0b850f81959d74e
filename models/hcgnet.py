"""HCGNet-A1 and HCGNet-A2 for 32x32 inputs (Yang et al., "Gated Convolutional Networks with Hybrid
Connectivity for Image Classification", AAAI 2020), the L-MCL tables' largest homogeneous pairs.

Three hybrid blocks of densely connected SMG cells, the first two followed by a strided transition cell;
both cells gate their output with a squeeze (forget) gate and a selective 3x3 / dilated-3x3 update.
Parameter names follow the reference CIFAR code (``features.HybridBlockN.SMGk``, ``features.TransitionN``,
``features.norm5``, ``classifier``) so its checkpoints load strictly.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureNet
from .wrn import _batch_norm_without_update


class BasicConv(nn.Sequential):
    """Pre-activation convolution: BN, ReLU, conv (no bias)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, dilation=1):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                              groups=groups, bias=False)


def _spatial_attention_pool(x, context):
    """Sum of ``x`` over positions, weighted by a softmax over positions of the 1-channel ``context`` map."""
    weights = F.softmax(context(x).flatten(1), dim=1).view(x.size(0), 1, *x.shape[2:])
    return (x * weights).sum(dim=(2, 3), keepdim=True)


class _GatedCell(nn.Module):
    """The gates shared by SMG and transition cells, acting on ``channels``-wide maps.

    Forget gate: the input is rescaled channel-wise by sigmoid(fc2(tanh(BN(fc1(pooled input))))).
    Update gate: depthwise 3x3 and dilated 3x3 branches, each attention-pooled to a vector, mixed per
    channel by a softmax over the two; the vector is added to every position of the rescaled input.
    """

    def __init__(self, channels, reduction_factor, forget_factor):
        super().__init__()
        squeezed = 2 * channels // reduction_factor
        self.conv_3x3 = BasicConv(channels, channels, 3, padding=1, groups=channels)
        self.conv_5x5 = BasicConv(channels, channels, 3, padding=2, groups=channels, dilation=2)
        self.global_context3x3 = nn.Conv2d(channels, 1, kernel_size=1)
        self.global_context5x5 = nn.Conv2d(channels, 1, kernel_size=1)
        self.fcall = nn.Conv2d(2 * channels, squeezed, kernel_size=1)
        self.bn_attention = nn.BatchNorm1d(squeezed)
        self.fc3x3 = nn.Conv2d(squeezed, channels, kernel_size=1)
        self.fc5x5 = nn.Conv2d(squeezed, channels, kernel_size=1)
        self.global_forget_context = nn.Conv2d(channels, 1, kernel_size=1)
        self.bn_forget = nn.BatchNorm1d(channels // forget_factor)
        self.fc1 = nn.Conv2d(channels, channels // forget_factor, kernel_size=1)
        self.fc2 = nn.Conv2d(channels // forget_factor, channels, kernel_size=1)

    def gate(self, x):
        pooled = _spatial_attention_pool(x, self.global_forget_context)
        forget = torch.tanh(self.bn_forget(self.fc1(pooled).flatten(1)))[:, :, None, None]
        forget = torch.sigmoid(self.fc2(forget))

        x_3x3, x_5x5 = self.conv_3x3(x), self.conv_5x5(x)
        v_3x3 = _spatial_attention_pool(x_3x3, self.global_context3x3)
        v_5x5 = _spatial_attention_pool(x_5x5, self.global_context5x5)
        attention = torch.tanh(self.bn_attention(self.fcall(torch.cat([v_3x3, v_5x5], 1)).flatten(1)))
        attention = attention[:, :, None, None]
        mix = F.softmax(torch.stack([self.fc3x3(attention), self.fc5x5(attention)], dim=1), dim=1)
        update = mix[:, 0] * v_3x3 + mix[:, 1] * v_5x5
        return x * forget + update


class _SMG(_GatedCell):
    """Dense layer: 1x1 bottleneck, grouped 3x3 to ``growth_rate`` maps, gates; output appended to the input."""

    def __init__(self, in_channels, growth_rate, bn_size=4, groups=4):
        super().__init__(growth_rate, reduction_factor=2, forget_factor=2)
        self.conv1_1x1 = BasicConv(in_channels, bn_size * growth_rate, 1)
        self.conv2_3x3 = BasicConv(bn_size * growth_rate, growth_rate, 3, padding=1, groups=groups)

    def forward(self, x):
        return torch.cat([x, self.gate(self.conv2_3x3(self.conv1_1x1(x)))], 1)


class _Transition(_GatedCell):
    """Compression to ``out_channels`` and stride-2 down-sampling, then the gates."""

    def __init__(self, in_channels, out_channels):
        super().__init__(out_channels, reduction_factor=4, forget_factor=4)
        middle = in_channels - (in_channels - out_channels) // 2
        self.conv1_1x1 = BasicConv(in_channels, middle, 1)
        self.conv2_3x3 = BasicConv(middle, out_channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.gate(self.conv2_3x3(self.conv1_1x1(x)))


class HCGNet(FeatureNet):
    """3x3 stem of 2*growth_rate[0] maps, three hybrid blocks (transitions halve the width after the first
    two), BN-ReLU head, global pooling, ``classifier``."""
    head_name = 'classifier'

    def __init__(self, growth_rate, block_config, bn_size=4, theta=0.5, num_classes=100):
        super().__init__()
        width = 2 * growth_rate[0]
        self.features = nn.Sequential()
        self.features.add_module('conv0', nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False))
        for i, (layers, growth) in enumerate(zip(block_config, growth_rate), 1):
            block = nn.Sequential()
            for k in range(layers):
                block.add_module(f'SMG{k + 1}', _SMG(width + k * growth, growth, bn_size))
            self.features.add_module(f'HybridBlock{i}', block)
            width += layers * growth
            if i < len(block_config):
                self.features.add_module(f'Transition{i}', _Transition(width, int(width * theta)))
                width = int(width * theta)
        self.features.add_module('norm5', nn.BatchNorm2d(width))
        self.classifier = nn.Linear(width, num_classes)

    def stages(self):
        """The three stages whose outputs are f1, f2, f3 (L-MCL hangs its auxiliary branches after them)."""
        f = self.features
        return [nn.Sequential(f.conv0, f.HybridBlock1, f.Transition1), nn.Sequential(f.HybridBlock2, f.Transition2),
                f.HybridBlock3]

    def get_feat_modules(self):
        f = self.features
        return nn.ModuleList([f.conv0, f.HybridBlock1, f.Transition1, f.HybridBlock2, f.Transition2,
                              f.HybridBlock3])

    def get_bn_before_relu(self):
        # Like a pre-activation WRN: a stage output is normalised by the next cell's first BN, then ReLU'd.
        f = self.features
        return [f.HybridBlock2.SMG1.conv1_1x1.norm, f.HybridBlock3.SMG1.conv1_1x1.norm, f.norm5]

    def forward_stages(self, x, preact=False):
        f = self.features
        f0 = f.conv0(x)
        f1 = f.Transition1(f.HybridBlock1(f0))
        f2 = f.Transition2(f.HybridBlock2(f1))
        f3 = f.HybridBlock3(f2)
        f3_pre = f.norm5(f3)
        pooled_map = F.relu(f3_pre)
        if preact:
            bn1, bn2, _ = self.get_bn_before_relu()
            return [f0, _batch_norm_without_update(bn1, f1), _batch_norm_without_update(bn2, f2), f3_pre, pooled_map]
        return [f0, f1, f2, f3, pooled_map]


def hcgnet_A1(num_classes=100, **kwargs):
    return HCGNet(growth_rate=(12, 24, 36), block_config=(8, 8, 8), num_classes=num_classes, **kwargs)


def hcgnet_A2(num_classes=100, **kwargs):
    return HCGNet(growth_rate=(24, 36, 64), block_config=(8, 8, 8), num_classes=num_classes, **kwargs)
