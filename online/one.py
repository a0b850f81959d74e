"""ONE (On-the-fly Native Ensemble; Lan, Zhu and Gong, "Knowledge Distillation by On-the-Fly Native Ensemble",
NeurIPS 2018) as an online method, as the official cifar_one.py trains it (Lan1991Xu/ONE_NeurIPS2018).

The network (``ONENet``) is built from any zoo model whose stages can be cut, as the official ``ONE_ResNet``
(models/cifar/resnet.py) builds it from a CIFAR ResNet. The low layers are shared; each of the m branches (3)
has its own copy of the last stage(s), head, global pooling and classifier. Branch 0 is the zoo model itself:
its shared layers plus its own last stage(s) are exactly the plain network, which is what ONE deploys. The
other branches are fresh copies taken from freshly constructed zoo models (so they start as the zoo
initialises them, not as copies of branch 0). A gate reads the shared output: global average pooling,
Linear(C, m), BatchNorm1d(m), ReLU and a softmax over the branches; the ensemble ("teacher") logits are the
gate-weighted sum of the branch logits. The branches start before the last stage on the 3-stage CIFAR families
(the official ONE_ResNet splits after layer2), before the last two stages on the 4-stage ImageNet ResNets
(what the ONE paper describes for ImageNet; ``--branch-stages`` overrides it).

Per step: cross-entropy on every branch and on the gate's ensemble, plus w(epoch) times the sum over the
branches of T^2 KL(ensemble || branch) at T = 3, the ensemble's distribution detached (it is the teacher).
w is the official sigmoid ramp-up, exp(-5 (1 - e / R)^2) for the 0-based epoch e < R, then 1, with
R = ``--consistency_rampup``: the official 80 epochs, written for the official 300-epoch recipe. When not
typed it is pinned to that recipe (helper/recipe.py), so a run of other --epochs ramps over the same
share of its length, round(80 * epochs / 300) (at least 1; ``--no_recipe_scaling`` keeps 80). The official
code has no ImageNet recipe, so ImageNet runs are scaled from the same 300 epochs (the 120-epoch ImageNet
recipe ramps over 32 epochs, ending before its second lr step, rather than over 80 of 120). As the
official ``KLLoss``, 1e-7 is added to the teacher's probabilities (the target is then not renormalised).
Validation scores every branch and the ensemble (ONE-E); branch 0, the plain zoo network, is the deployed
one (the official best_acc is its accuracy too) and is exported after every epoch as a plain zoo checkpoint.
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.recipe import scheduled
from helper import distributed
from helper.checkpoint import atomic_save
from helper.errors import KDZooError
from helper.metrics import correct_topk
from helper.run_files import RunFiles
from helper.runtime import autocast
from models.imagenet.resnet import ResNet as ImageNetResNet
from models.lmcl import AuxiliaryBranch, stage_plan
from models.registry import build_model, check_model_name

from .base import OnlineMethod, TrainStep, millions, online_run_name, register

ONE_PREFIX = 'one_'  # --arch one_<zoo name> selects ONE
# The official ONE ResNet-110 has bottleneck blocks (its depth >= 44 rule): the zoo's resnet110_bottleneck.
ONE_ALIASES = {'one_resnet110': 'resnet110_bottleneck'}
# The official script's recipe on the 32x32 data sets (scripts/ONE_ResNet32.sh: --epochs 300 --schedule 151
# 225 --gamma 0.1 --wd 1e-4; cifar_one.py: lr 0.1, batch 128, SGD momentum 0.9 without Nesterov). On ImageNet
# the shared ImageNet recipe fills what is not given.
ONE_RECIPE = dict(epochs=300, batch_size=128, learning_rate=0.1, weight_decay=1e-4, lr_decay='step',
                  lr_decay_epochs='151,225')
ONE_T = 3.0  # the official KLLoss hard-codes T = 3
# The official --consistency_rampup, epochs of ONE_RECIPE's 300 (the reference it is scaled from on every data set).
ONE_RAMPUP = 80
TARGET_EPS = 1e-7  # added to the teacher's probabilities by the official KLLoss


def one_model(arch):
    """The zoo model behind an ONE ``--arch`` (``one_<zoo name>``), or None for another name."""
    return arch[len(ONE_PREFIX):] if arch.startswith(ONE_PREFIX) else None


def sigmoid_rampup(epoch, length):
    """The official consistency weight at a 0-based epoch: exp(-5 (1 - e / length)^2), 1 from ``length`` on."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def one_kl(student_logits, teacher_logits, temperature=ONE_T):
    """T^2 * sum over classes of (p + 1e-7) (log(p + 1e-7) - log q), averaged over the batch, with
    p = softmax(teacher / T) detached and q = softmax(student / T): the official KLLoss."""
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=1) + TARGET_EPS
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature ** 2 * (target * (target.log() - log_q)).sum() / student_logits.size(0)


# ---- the network ------------------------------------------------------------------------------------------

def branch_plan(model):
    """(stages, head modules) of a zoo model: the stages in order and what follows the last one before pooling."""
    if isinstance(model, ImageNetResNet):
        # its stages end before their last ReLU (the next block or the pooling applies it)
        return list(model.stages()), [nn.ReLU()]
    try:
        *stages, head = stage_plan(model)
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


# ---- the method -------------------------------------------------------------------------------------------

@register('one')
class ONE(OnlineMethod):
    """The ONE network (``model``: backbone = branch 0, further branches, gate) trained by the ONE loss."""
    recipe = ONE_RECIPE
    pinned = {'consistency_rampup': (ONE_RAMPUP, ONE_RECIPE['epochs'])}  # on ImageNet too: see the module text
    nesterov = False  # the official SGD has plain momentum (--nesterov still asks for Nesterov)

    @classmethod
    def add_arguments(cls, parser):
        one = parser.add_argument_group('ONE (--arch one_<zoo name>; --kd_T is its temperature, 3)')
        one.add_argument('--num-branches', '--num_branches', dest='num_branches', type=int, default=3,
                         help='branches sharing the low layers (their gated sum is the teacher)')
        one.add_argument('--consistency_rampup', '--consistency-rampup', dest='consistency_rampup', type=float,
                         default=None, help=f'epochs of the sigmoid ramp-up of the KD term ({ONE_RAMPUP} of the '
                         f'official {ONE_RECIPE["epochs"]}; not given, scaled by --epochs / {ONE_RECIPE["epochs"]} '
                         f'on every data set unless --no_recipe_scaling)')
        one.add_argument('--branch-stages', '--branch_stages', dest='branch_stages', type=int, default=None,
                         help='last stages each branch owns (1 on CIFAR nets, 2 on ImageNet ResNets)')

    @classmethod
    def networks(cls, args):
        name = ONE_ALIASES.get(args.arch, one_model(args.arch))
        check_model_name(name, args.dataset, '--arch (after one_)')
        branch_plan(build_model(name, 10, args.dataset))  # a family ONE cannot branch: one line, before anything runs
        return [name]

    @classmethod
    def check(cls, args):
        if args.num_branches < 2:
            raise KDZooError(f"--num-branches must be at least 2 (the ensemble teacher needs them), got "
                             f"{args.num_branches}")
        if args.kd_T <= 0:
            raise KDZooError(f"--kd_T must be positive, got {args.kd_T}")
        if args.consistency_rampup < 0:
            raise KDZooError(f"--consistency_rampup cannot be negative, got {args.consistency_rampup}")

    @classmethod
    def build_network(cls, args, num_classes):
        return ONENet(args.peers[0], num_classes, args.dataset, args.num_branches, args.branch_stages)

    def __init__(self, network, args):
        super().__init__(network, args)
        self.temperature = args.kd_T
        self.rampup = scheduled(args, 'consistency_rampup')  # scaled to --epochs unless typed

    def deployed(self):
        return [self.model.backbone]

    def step(self, batch, epoch):
        logits, ensemble = self.model(batch.images)
        targets = batch.targets
        weight = sigmoid_rampup(epoch - 1, self.rampup)  # our epochs are 1-based, the official 0-based
        losses = dict(
            ce=sum(F.cross_entropy(branch, targets) for branch in logits),
            ce_ensemble=F.cross_entropy(ensemble, targets),
            kd=weight * sum(one_kl(branch, ensemble, self.temperature) for branch in logits))
        return TrainStep(logits=logits[0], losses=losses)

    def predict(self, images):
        """Branch 0 alone: the plain zoo network, as deployed."""
        return self.model.backbone(images)

    @torch.no_grad()
    def validate(self, loader, device, precision, score=None):
        """Branch 0's top-1/top-5/loss, and ``val_branch<i>_top1`` for every branch and ``val_ensemble_top1``
        (ONE-E, the gate's ensemble) for the epoch record; one pass over the loader."""
        heads = len(self.model.branches) + 2  # the branches, then the ensemble
        correct = torch.zeros(heads, device=device)
        correct5 = loss_sum = torch.zeros((), device=device)
        count = 0
        for batch in loader:
            with autocast(device, precision):
                logits, ensemble = self.model(batch.images)
            outputs = torch.stack([*logits, ensemble]).float()  # (heads, B, classes)
            correct = correct + (outputs.argmax(-1) == batch.targets).sum(-1)
            correct5 = correct5 + correct_topk(outputs[0], batch.targets, ks=(5,))[0]
            loss_sum = loss_sum + F.cross_entropy(outputs[0], batch.targets, reduction='sum')
            count += batch.targets.size(0)
        totals = torch.cat([correct.float(), torch.stack([correct5.float(), loss_sum.float()]),
                            torch.tensor([float(count)], device=device)])
        if distributed.current().enabled:  # each process scored its own part of the validation set
            totals = distributed.all_reduce_patient(totals)
        count = max(int(totals[-1]), 1)
        top1 = (100.0 * totals[:heads] / count).tolist()
        extra = {f'val_branch{i}_top1': value for i, value in enumerate(top1[:-1])}
        extra['val_ensemble_top1'] = top1[-1]
        return top1[0], 100.0 * float(totals[heads]) / count, float(totals[heads + 1]) / count, extra

    def after_epoch(self, state, files):
        """Write branch 0 (the plain zoo network) as ``<model>_branch0/<model>_branch0_{last,best}.pth``."""
        record = state['history'][-1]
        entry = dict(model=self.model.backbone.state_dict(), epoch=record['epoch'], accuracy=record['val_top1'],
                     best_acc=state['best_acc'], arch=self.model.name)
        os.makedirs(os.path.dirname(files.branch_checkpoint('last')), exist_ok=True)
        atomic_save(entry, files.branch_checkpoint('last'))
        if state['best_epoch'] == record['epoch']:
            atomic_save(entry, files.branch_checkpoint('best'))

    # ---- the run --------------------------------------------------------------------------------
    @classmethod
    def run_name(cls, args):
        return online_run_name(args.arch, args.num_branches, cls.name, args.dataset, args.trial)

    @classmethod
    def run_files(cls, args):
        return ONERunFiles(args.save_root, cls.run_name(args), args.arch, args.peers[0])

    def networks_note(self, args):
        return (f"{args.num_branches} branches of {args.peers[0]} from its stage {self.model.shared_index} on "
                f"({millions(self.model.backbone)} parameters deployed, {millions(self.model)} trained)")

    def settings_note(self, args):
        return f"T {args.kd_T:g}, ramp-up {self.rampup:g} epochs; "

    def summary(self, args, files, state):
        last, history = state['history'][-1], state['history']
        ensemble_best = max(r['val_ensemble_top1'] for r in history)
        return (f"one {args.peers[0]} (branch 0, deployed): last top-1 {last['val_top1']:.2f}%, best "
                f"{state['best_acc']:.2f}% at epoch {state['best_epoch']}; ensemble (ONE-E) last "
                f"{last['val_ensemble_top1']:.2f}%, best {ensemble_best:.2f}%; {files.branch_checkpoint('best')}")


class ONERunFiles(RunFiles):
    """The run folder of the shared loop plus ``<model>_branch0/``, whose name lets tools/eval.py and
    train_student.py --path_t read the architecture."""

    def __init__(self, save_root, run_name, arch, model_name):
        super().__init__(save_root, 'online', run_name, arch)
        self.branch_name = model_name

    def branch_checkpoint(self, kind):
        tag = f'{self.branch_name}_branch0'
        return os.path.join(self.folder, tag, f'{tag}_{kind}.pth')
