"""ONE's multi-branch network (Lan, Zhu and Gong, "Knowledge Distillation by On-the-Fly Native Ensemble",
NeurIPS 2018), built from any zoo model whose stages L-MCL can branch, as the official ``ONE_ResNet``
(Lan1991Xu/ONE_NeurIPS2018, models/cifar/resnet.py) builds it from a CIFAR ResNet.

The low layers are shared; each of the m branches (3) has its own copy of the last stage(s), head,
global pooling and classifier. Branch 0 is the zoo model itself: its shared layers plus its own last
stage(s) are exactly the plain network, which is what ONE deploys. The other branches are fresh copies
taken from freshly constructed zoo models (so they start as the zoo initialises them, not as copies of
branch 0). A gate reads the shared output: global average pooling, Linear(C, m), BatchNorm1d(m), ReLU and a
softmax over the branches; the ensemble ("teacher") logits are the gate-weighted sum of the branch logits.

Where the branches start: before the last stage on the 3-stage CIFAR families (the official ONE_ResNet
splits after layer2), before the last two stages on the 4-stage ImageNet ResNets (what the ONE paper
describes for ImageNet; ``branch_stages`` overrides it).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from .imagenet.resnet import ResNet as ImageNetResNet
from .lmcl import AuxiliaryBranch, _stage_plan
from .registry import build_model

ONE_PREFIX = 'one_'


def branch_plan(model):
    """(stages, head modules) of a zoo model: the stages in order and what follows the last one before pooling."""
    if isinstance(model, ImageNetResNet):
        # its stages end before their last ReLU (the next block or the pooling applies it)
        return list(model.stages()), [nn.ReLU()]
    try:
        *stages, head = _stage_plan(model)
    except KDZooError:
        raise KDZooError(f"ONE has no branches for {type(model).__name__}; use a CIFAR ResNet, WRN, ShuffleNetV2 "
                         f"or HCGNet, or an ImageNet ResNet") from None
    return list(stages), head


def default_branch_stages(model):
    """How many of the last stages each branch owns: 1 on 3-stage CIFAR nets, 2 on the ImageNet ResNets."""
    return 2 if isinstance(model, ImageNetResNet) else 1


class ONENet(nn.Module):
    """``forward(x)`` gives (the m branch logits, branch 0 first; the gate-weighted ensemble logits)."""

    def __init__(self, name, num_classes, dataset='cifar100', branches=3, branch_stages=None):
        super().__init__()
        if branches < 2:
            raise KDZooError(f"ONE needs at least 2 branches to build its ensemble teacher, got --num-branches "
                             f"{branches}")
        self.name = name
        self.backbone = build_model(name, num_classes, dataset, '--arch')
        stages, _ = branch_plan(self.backbone)
        self.branch_stages = branch_stages or default_branch_stages(self.backbone)
        if not 1 <= self.branch_stages < len(stages):
            raise KDZooError(f"--branch-stages must lie in 1..{len(stages) - 1} for {name} ({len(stages)} stages), "
                             f"got {self.branch_stages}")
        # feats[k] of the zoo forward is the output of stage k (feats[0] the stem): the branches' input
        self.shared_index = len(stages) - self.branch_stages
        extra = []
        for _ in range(branches - 1):
            donor = build_model(name, num_classes, dataset)
            donor_stages, head = branch_plan(donor)
            extra.append(AuxiliaryBranch(donor_stages[self.shared_index:], head, donor.get_classifier()))
        self.branches = nn.ModuleList(extra)
        width = self._shared_width(dataset)
        self.gate = nn.Sequential(nn.Linear(width, branches), nn.BatchNorm1d(branches))

    @torch.no_grad()
    def _shared_width(self, dataset):
        """Channels of the shared output, from one eval-mode forward of the backbone."""
        size = 224 if dataset == 'imagenet' else 32
        was_training = self.backbone.training
        self.backbone.eval()
        feats, _ = self.backbone(torch.zeros(1, 3, size, size), is_feat=True)
        self.backbone.train(was_training)
        return feats[self.shared_index].shape[1]

    def forward(self, x):
        feats, logits = self.backbone(x, is_feat=True)
        shared = feats[self.shared_index]
        weights = F.softmax(F.relu(self.gate(torch.flatten(F.adaptive_avg_pool2d(shared, 1), 1))), dim=1)
        all_logits = [logits] + [branch(shared)[1] for branch in self.branches]
        ensemble = sum(weights[:, i:i + 1] * branch_logits for i, branch_logits in enumerate(all_logits))
        return all_logits, ensemble


def one_model(arch):
    """The zoo model behind an ONE ``--arch`` (``one_<zoo name>``), or None for another name."""
    return arch[len(ONE_PREFIX):] if arch.startswith(ONE_PREFIX) else None
