"""FCFD: Liu et al., "Function-Consistent Feature Distillation" (ICLR 2023), as the official code
(LiuDongyang6/FCFD, ``classification/cifar/main.py``, ``classification/models/meta.py``, ``experiments/*/*.yaml``).

Both networks are cut into the same number n of stages: here the maps ``f0 .. f(K-1)`` of ``forward_stages`` and,
for the last stage, the map ``m`` the classifier pools (the official last stage ends where its
``forward_classifier`` starts). Trained bridges (3x3 conv + BN, a stride-2 conv or a 4x4 transposed conv when the
heights differ by two, and a LeakyReLU(0.1) when the target map is post-ReLU) carry stage j's map of one network
into the other's, for j = 1 .. n-1 and both directions. Each step:

* the student's own logits: ``-r`` x CE + ``-a`` x KD(student, teacher) at ``--fcfd_T``;
* ``--fcfd_paths`` (2) mixed paths drawn (``random.sample``, as the official, but from a Python generator seeded
  per step by (seed, epoch, step) instead of the global one: see ``StepDraws``) from the candidates of
  ``--fcfd_path_type`` ('bi': the teacher's stages 0..j-1, a bridge, the student's stages j..n-1, and the reverse,
  j = 2 .. n-1); each path's logits (the classifier of the network it ends in) learn from the teacher's logits by
  ``--fcfd_mix`` x KD at ``--fcfd_T``;
* ``-b`` x min(epoch / ``--fcfd_warmup``, 1) x the L2 terms: at each stage j >= 1, the MSE to the teacher's own map
  of every map of the teacher's space at that stage (the student's map bridged into it, and the teacher's later
  stages on a bridged student map, of the sampled student-to-teacher paths), and at the last stage the MSE of the
  same maps ReLU'd and average-pooled.

The teacher's later stages run with the teacher's weights frozen and in eval mode, gradients reaching only the
bridges and the student. The student's later stages on bridged teacher maps run in train mode without updating its
BN running statistics (the official ``GhostForward`` keeps them apart per path and never reads them).

Per-pair defaults from the official yaml files: ``-r 1 -a 1``, ``-b`` (weight_l2) 5 (resnet56->resnet20 and ImageNet
ResNet34->ResNet18 0.02), ``--fcfd_T`` 4 (ResNet50->MobileNetV2, resnet32x4->ShuffleV1/V2 8; ImageNet 1),
``--fcfd_mix`` 1 (wrn_40_2->wrn_16_2 0.2), ``--fcfd_warmup`` 20 (ImageNet 5: ``IN/main.py``). Where kdzoo differs
from the official code, see docs/methods.md (FCFD).
"""
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from dataset.batches import StepDraws
from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .base import Distiller
from .flags import require
from .registry import register
from .teacher import Borrowed

__all__ = ['fcfd_kd', 'fcfd_l2', 'candidate_paths', 'build_bridge', 'FCFD']

# A stream of its own for the mixed paths' draws (dataset/batches.py's streams are 0-3, MGD's masks 101).
PATH_STREAM = 102

# (teacher, student) -> value, from LiuDongyang6/FCFD classification/experiments/{cifar,IN}/<student>-<teacher>.yaml
CIFAR_T = {('ResNet50', 'MobileNetV2'): 8.0, ('resnet32x4', 'ShuffleV1'): 8.0, ('resnet32x4', 'ShuffleV2'): 8.0}
L2_WEIGHT = {('resnet56', 'resnet20'): 0.02, ('ResNet34', 'ResNet18'): 0.02}
MIX_WEIGHT = {('wrn_40_2', 'wrn_16_2'): 0.2}


def candidate_paths(n, kind):
    """The official ``_create_candidate_path`` for n stages: per stage, 0 the teacher and 1 the student; 'bi' lists
    the teacher-to-student switches after stage j-1, then the student-to-teacher ones, j = 2 .. n-1."""
    t2s = [[0] * j + [1] * (n - j) for j in range(2, n)]
    s2t = [[1] * j + [0] * (n - j) for j in range(2, n)]
    return {'bi': t2s + s2t, 's2t': s2t, 't2s': t2s, 'nomix': []}[kind]


def fcfd_kd(logits_s, logits_t, temperature):
    """The official ``_loss_kl``: T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over the batch, the teacher side
    detached; as ``kd_loss`` but computed in float64 when given float64."""
    log_p_s = F.log_softmax(at_least_fp32(logits_s) / temperature, dim=1)
    log_p_t = F.log_softmax(at_least_fp32(logits_t).detach() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True) * temperature ** 2


def fcfd_l2(teacher_space, targets):
    """The official L2 ("appearance") terms: ``teacher_space[j]`` lists the maps in the teacher's space at stage j
    (j = 0 .. n-2 for the official stages 1 .. n-1) and ``targets[j]`` the teacher's own (detached); MSE of each to
    its target, and at the last stage also of their ReLU'd, average-pooled vectors."""
    loss = 0
    for j, (maps, target) in enumerate(zip(teacher_space, targets)):
        target = target.detach()
        for value in maps:
            loss = loss + F.mse_loss(value, target)
        if j == len(targets) - 1:
            pooled = F.adaptive_avg_pool2d(F.relu(target), 1).flatten(1)
            for value in maps:
                loss = loss + F.mse_loss(F.adaptive_avg_pool2d(F.relu(value), 1).flatten(1), pooled)
    return loss


def build_bridge(source, target, leaky):
    """The official ``build_bridge`` from a map shaped ``source`` (N, C, H, W) to one shaped ``target``."""
    c_in, h_in, c_out, h_out = source[1], source[2], target[1], target[2]
    if h_in == h_out:
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)
    elif h_in == 2 * h_out:
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1)
    elif 2 * h_in == h_out:
        conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
    else:
        raise KDZooError(f"fcfd bridges maps whose heights are equal or differ by a factor of 2, not {h_in} and "
                         f"{h_out}; pick another pair")
    layers = [conv, nn.BatchNorm2d(c_out)] + ([nn.LeakyReLU(negative_slope=0.1)] if leaky else [])
    bridge = nn.Sequential(*layers)
    for module in bridge.modules():  # the official init, which leaves the transposed conv to PyTorch's
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return bridge


class Stages:
    """A network cut into FCFD's n stages: stage 0 .. n-2 end at ``forward_stages``'s maps f0 .. f(n-2), the last
    one at the pooled map m; ``step(j, x)`` runs stage j on stage j-1's map."""

    def __init__(self, net):
        self.functions = net.stage_functions()  # refuses, in one line, a family that cannot be cut
        self.n = len(self.functions) - 1  # f0 .. f(K-1) and m: K + 1 stages

    def step(self, j, x):
        if j < self.n - 1:
            return self.functions[j](x)
        return self.functions[-1](self.functions[-2](x))

    def maps(self, out, pooled_map):
        """The n stage maps of a network's ``NetOutput``: its feats, and ``pooled_map`` for the last."""
        return list(out.feats[:self.n - 1]) + [pooled_map]

    @torch.no_grad()
    def pooled_map(self, net, out):
        """The map ``net`` pools, from its ``NetOutput``'s last stage map, computed in eval mode without gradient
        (the teacher's, and the probes')."""
        was_training = net.training
        net.eval()
        try:
            return self.functions[-1](out.feats[self.n - 1])
        finally:
            net.train(was_training)


class Continue(nn.Module):
    """Stages ``start`` .. n-1 and the classifier of ``net`` on stage start-1's map: (the maps, the logits). A module,
    so that ``functional_call`` can run it on copies of the network's buffers (the student's BN statistics)."""

    def __init__(self, net, stages, start):
        super().__init__()
        self.net, self.stages, self.start = net, stages, start

    def forward(self, x):
        maps = []
        for j in range(self.start, self.stages.n):
            x = self.stages.step(j, x)
            maps.append(x)
        return maps, self.net.forward_head(x)


@register('fcfd')
class FCFD(Distiller):
    """CE + KD + the mixed paths' KD (``--fcfd_mix``) + ``-b`` x ramp x the L2 terms; see the module docstring."""
    needs_feats = True
    needs_pooled_map = True

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.stages_s, self.stages_t = Stages(student), Stages(teacher)
        n = self.stages_t.n
        if self.stages_s.n != n:
            raise KDZooError(f"fcfd pairs stages one to one, but the student {args.model_s} has {self.stages_s.n} "
                             f"and the teacher {args.model_t} {n}; pick a pair with as many stages")
        maps_s = self.stages_s.maps(probe_s, self.stages_s.pooled_map(student, probe_s))
        maps_t = self.stages_t.maps(probe_t, self.stages_t.pooled_map(teacher, probe_t))
        self.n, self.T, self.mix, self.warmup = n, args.fcfd_T, args.fcfd_mix, args.fcfd_warmup
        self.num_paths, self.paths = args.fcfd_paths, candidate_paths(n, args.fcfd_path_type)
        self.draws = StepDraws(data, args, PATH_STREAM)  # a resumed run and every process draw the same paths
        if self.num_paths > len(self.paths):
            raise KDZooError(f"--fcfd_paths {self.num_paths} is more than the {len(self.paths)} mixed paths of "
                             f"--fcfd_path_type {args.fcfd_path_type} for {n} stages")
        # to_student[j - 1] carries the teacher's stage-j map into the student's space, to_teacher[j - 1] the reverse
        self.to_student = nn.ModuleList(build_bridge(t.shape, s.shape, bool((s >= 0).all()))
                                        for s, t in zip(maps_s[1:], maps_t[1:]))
        self.to_teacher = nn.ModuleList(build_bridge(s.shape, t.shape, bool((t >= 0).all()))
                                        for s, t in zip(maps_s[1:], maps_t[1:]))
        self.teacher = Borrowed(teacher)

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('FCFD')
        group.add_argument('--fcfd_T', type=float, default=None,
                           help='temperature of the KD terms (official yaml T: 4; ResNet50->MobileNetV2, '
                                'resnet32x4->ShuffleV1/V2 8; ImageNet 1)')
        group.add_argument('--fcfd_mix', type=float, default=None,
                           help="weight of each mixed path's KD to the teacher (1; wrn_40_2->wrn_16_2 0.2)")
        group.add_argument('--fcfd_paths', type=int, default=2, help='mixed paths drawn each step (official 2)')
        group.add_argument('--fcfd_path_type', choices=('bi', 's2t', 't2s', 'nomix'), default='bi',
                           help='which mixed paths are drawn (official --extra_type, bi)')
        group.add_argument('--fcfd_warmup', type=int, default=None,
                           help='epochs of linear warm-up of the L2 terms (20; ImageNet 5)')

    @classmethod
    def defaults_for(cls, args):
        cls.settings(args)
        pair = (args.model_t, args.model_s)
        return 1.0, 1.0, L2_WEIGHT.get(pair, 5.0)

    @staticmethod
    def settings(args):
        pair, imagenet = (args.model_t, args.model_s), args.dataset == 'imagenet'
        if args.fcfd_T is None:
            args.fcfd_T = 1.0 if imagenet else CIFAR_T.get(pair, 4.0)
        if args.fcfd_mix is None:
            args.fcfd_mix = MIX_WEIGHT.get(pair, 1.0)
        if args.fcfd_warmup is None:
            args.fcfd_warmup = 5 if imagenet else 20
        require(args, positive=['fcfd_T'], non_negative=['fcfd_mix', 'fcfd_paths', 'fcfd_warmup'])

    def run_mixed(self, student, path, bridged_s, maps_t):
        """One mixed path: (its logits, the teacher-space maps it adds, by stage); ``bridged_s[j - 1]`` is the
        student's stage-j map already bridged into the teacher's space (each bridge runs once a step, as the
        official's)."""
        j = path.index(path[-1])  # the first stage run by the network the path ends in
        if path[-1] == 1:  # the teacher's stages 0..j-1, then the student's, its BN statistics left alone
            x = self.to_student[j - 2](maps_t[j - 1])
            buffers = {f'net.{name}': value.clone() for name, value in student.named_buffers()}
            _, logits = functional_call(Continue(student, self.stages_s, j), buffers, (x,))
            return logits, {}
        x = bridged_s[j - 2]
        maps, logits = Continue(self.teacher.module, self.stages_t, j)(x)
        return logits, {j + k: value for k, value in enumerate(maps)}

    def forward_train(self, student, batch, out_t, epoch):
        out_s = self.run_student(student, batch)
        maps_s = self.stages_s.maps(out_s, out_s.pooled_map)
        maps_t = self.stages_t.maps(out_t, self.stages_t.pooled_map(self.teacher.module, out_t))
        terms = {'ce': self.gamma * F.cross_entropy(out_s.logits, batch.targets)}
        if self.alpha:
            terms['kd'] = self.alpha * fcfd_kd(out_s.logits, out_t.logits, self.T)
        bridged_s = [bridge(maps_s[j + 1]) for j, bridge in enumerate(self.to_teacher)]
        teacher_space = [[x] for x in bridged_s]
        mix = 0
        for path in random.Random(self.draws.next_seed(epoch)).sample(self.paths, self.num_paths):
            logits, maps = self.run_mixed(student, path, bridged_s, maps_t)
            for stage, value in maps.items():
                teacher_space[stage - 1].append(value)
            mix = mix + fcfd_kd(logits, out_t.logits, self.T)
        if self.num_paths and self.mix:
            terms['fcfd_mix'] = self.mix * mix
        if self.beta:
            terms[self.name] = self.beta * self.ramp(epoch) * fcfd_l2(teacher_space, maps_t[1:])
        return out_s.logits, terms
