"""L-MCL's networks: zoo models with auxiliary stage branches, and the repo's ``--arch`` names.

Each peer is a zoo model (its ``backbone``, the network that is deployed) plus two auxiliary branches,
as the L-MCL repo builds them: the branch after stage 1 is a fresh copy of stages 2 and 3, the branch
after stage 2 a fresh copy of stage 3, each followed by the backbone's head (WRN's BN-ReLU, ShuffleNet's
1x1 conv-BN-ReLU, HCGNet's BN-ReLU, nothing for ResNet), global pooling and its own classifier. The
copies are taken from another freshly constructed zoo model, so they are initialised as the zoo does.
A peer yields S = 3 stage embeddings (pooled vectors, all of the backbone's final width) and 3 logits,
ordered branch 1, branch 2, backbone.
"""
import difflib

import torch
import torch.nn as nn

from helper.errors import KDZooError
from . import model_dict
from .hcgnet import HCGNet
from .registry import build_model
from .resnet import ResNet
from .ShuffleNetv2 import ShuffleNetV2
from .wrn import WideResNet

NUMBER_STAGES = 3

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


def _stage_plan(model):
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


class PeerNet(nn.Module):
    """A zoo network and its two auxiliary branches; ``forward`` gives (embeddings, logits), 3 each."""

    def __init__(self, name, num_classes, dataset='cifar100'):
        super().__init__()
        self.name = name
        self.backbone = build_model(name, num_classes, dataset)
        _stage_plan(self.backbone)  # refuse unsupported families before building anything else
        branches = []
        for start in range(1, NUMBER_STAGES):
            donor = build_model(name, num_classes, dataset)
            *stages, head = _stage_plan(donor)
            branches.append(AuxiliaryBranch(stages[start:], head, donor.get_classifier()))
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        feats, logits = self.backbone(x, is_feat=True)
        embeddings, all_logits = [], []
        for stage, branch in enumerate(self.branches, 1):
            embedding, branch_logits = branch(feats[stage])
            embeddings.append(embedding)
            all_logits.append(branch_logits)
        return embeddings + [feats[-1]], all_logits + [logits]


class PeerSet(nn.Module):
    """The M peers trained together; ``forward`` gives per-peer lists of stage embeddings and logits."""

    def __init__(self, names, num_classes, dataset='cifar100'):
        super().__init__()
        self.peers = nn.ModuleList(PeerNet(name, num_classes, dataset) for name in names)

    def forward(self, x):
        outputs = [peer(x) for peer in self.peers]
        return [emb for emb, _ in outputs], [logits for _, logits in outputs]
