"""The L-MCL repo's ``--arch`` names, and where the zoo's CIFAR families can be cut into stages.

What a model is, for the online methods (online/) that branch one: ``stage_plan`` gives a zoo model's three
stages and the head modules between its last stage and the pooling (WRN's BN-ReLU, ShuffleNet's 1x1
conv-BN-ReLU, HCGNet's BN-ReLU, nothing for ResNet), and ``AuxiliaryBranch`` is later stages, head, global
pooling and a classifier fed by an earlier stage's output. L-MCL's peers (online/lmcl.py) and ONE's branches
(online/one.py) are built from them. The name tables map the L-MCL repo's names to zoo models; they build
nothing, so anything that reads an ``--arch`` (train_online_mcl.py, its tests) resolves it here.
"""
import difflib

import torch
import torch.nn as nn

from helper.errors import KDZooError
from . import model_dict
from .hcgnet import HCGNet
from .resnet import ResNet
from .ShuffleNetv2 import ShuffleNetV2
from .wrn import WideResNet

NUMBER_STAGES = 3  # the stages of a CIFAR family (stage_plan); an L-MCL peer has one head per stage

# The L-MCL repo's homogeneous --arch names -> the zoo model of every peer.
HOMOGENEOUS = {
    'lmcl_resnet32_cifar': 'resnet32', 'lmcl_resnet56_cifar': 'resnet56',
    'lmcl_resnet110_cifar': 'resnet110_bottleneck', 'lmcl_wrn_16_2_cifar': 'wrn_16_2',
    'lmcl_wrn_40_2_cifar': 'wrn_40_2', 'lmcl_wrn_28_4_cifar': 'wrn_28_4',
    'lmcl_ShuffleNetV2_05x_cifar': 'ShuffleV2_0_5', 'lmcl_ShuffleNetV2_1x_cifar': 'ShuffleV2',
    'lmcl_hcgnet_A1_cifar': 'hcgnet_A1', 'lmcl_hcgnet_A2_cifar': 'hcgnet_A2',
}
# Its heterogeneous pairs (always two networks).
HETEROGENEOUS = {
    'lmcl_res32_res110_cifar': ('resnet32', 'resnet110_bottleneck'),
    'lmcl_res56_res110_cifar': ('resnet56', 'resnet110_bottleneck'),
    'lmcl_wrn_16_2_wrn_40_2_cifar': ('wrn_16_2', 'wrn_40_2'),
    'lmcl_wrn_40_2_wrn_28_4_cifar': ('wrn_40_2', 'wrn_28_4'),
    'lmcl_res56_wrn_40_2_cifar': ('resnet56', 'wrn_40_2'),
    'lmcl_res110_wrn_28_4_cifar': ('resnet110_bottleneck', 'wrn_28_4'),
    'lmcl_shufflev2_res110_cifar': ('ShuffleV2', 'resnet110_bottleneck'),
    'lmcl_shufflev2_wrn_40_2_cifar': ('ShuffleV2', 'wrn_40_2'),
}
# Its single-network names (main_cifar_baseline.py) -> zoo model; zoo names are accepted as well.
BASELINES = {name[len('lmcl_'):]: zoo for name, zoo in HOMOGENEOUS.items()}


def peer_models(arch, number_net):
    """The zoo names of the peers of an L-MCL ``--arch``, or one line saying what is wrong."""
    if arch in HETEROGENEOUS:
        if number_net != 2:
            raise KDZooError(f"'{arch}' is a pair of two different networks; --number-net {number_net} "
                             f"needs a homogeneous --arch such as {next(iter(HOMOGENEOUS))}")
        return list(HETEROGENEOUS[arch])
    if arch in HOMOGENEOUS:
        return [HOMOGENEOUS[arch]] * number_net
    raise KDZooError(f"unknown --arch '{arch}'{_suggest(arch, [*HOMOGENEOUS, *HETEROGENEOUS])}; "
                     f"use one of the L-MCL names (docs/methods.md) or --baseline with a single network")


def baseline_model(arch):
    """The zoo name behind a baseline ``--arch`` (L-MCL's name such as resnet32_cifar, or a zoo name)."""
    if arch in BASELINES:
        return BASELINES[arch]
    if arch in model_dict:
        return arch
    raise KDZooError(f"unknown --arch '{arch}' for --baseline{_suggest(arch, [*BASELINES, *model_dict])}")


def _suggest(name, known):
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ''


def stage_plan(model):
    """(stage 1, stage 2, stage 3, head modules) of a zoo model, for building branches from its parts."""
    if isinstance(model, ResNet):
        return model.layer1, model.layer2, model.layer3, []
    if isinstance(model, WideResNet):
        return model.block1, model.block2, model.block3, [model.bn1, nn.ReLU()]
    if isinstance(model, ShuffleNetV2):
        return model.layer1, model.layer2, model.layer3, [model.conv2, model.bn2, nn.ReLU()]
    if isinstance(model, HCGNet):
        return (*model.stages(), [model.features.norm5, nn.ReLU()])
    raise KDZooError(f"L-MCL has no auxiliary branches for {type(model).__name__}; use a ResNet, WRN, "
                     f"ShuffleNetV2 or HCGNet peer")


class AuxiliaryBranch(nn.Module):
    """Later stages, head, global average pooling and a classifier, fed by an earlier stage's output."""

    def __init__(self, stages, head, classifier):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(*head)
        self.classifier = classifier

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
            if isinstance(x, tuple):  # the zoo's last blocks also return their pre-activation
                x = x[0]
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.head(x), 1), 1)
        return pooled, self.classifier(pooled)
