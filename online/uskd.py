"""USKD, teacher-free self-distillation from Yang et al., "From Knowledge Distillation to Self-Knowledge
Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023), as the official
``USKDLoss`` (yzd-v/cls_KD ``mmcls/models/dis_losses/uskd.py``) and its ``ClassificationDistiller`` with
``sd=True`` (``mmcls/models/classifiers/distiller.py``) train it: one network from scratch, no teacher.

    python train_online_mcl.py --uskd --arch resnet32                 # CIFAR-100
    python train_online_mcl.py --uskd --arch ResNet18 --dataset imagenet

Per step, on the network's logits z (C classes), label y, and a weak linear classifier (the one extra module,
Linear(channels, C), trained with the network and not deployed) on the globally pooled map of the stage before
the last (the official ``neck(fea_s[-2])``; here the zoo's feature ``--uskd_layer`` -3):

* CE on the labels (the network's own head loss, ``ori_loss``);
* alpha * target term: -mean(p_t * log s_y), s = softmax(z), with the soft target label
  p_t = s_y^2 + 1 - batch mean of s_y^2, detached;
* beta * non-target term: cross-entropy of the log-softmax over the non-target classes against a Zipf label,
  1/rank over all classes normalised over the non-target ones, the rank from the descending order of
  w / (1 - w_y + 1e-6) + log s / (1 - log s_y + 1e-6), w = softmax(weak logits);
* the weak term: -mean(sum(mu * t * log softmax(weak logits))), t = 0.9 one-hot + 0.1 / C.

The ranking's second part is the student's log-probabilities, not its probabilities: the official code reuses
the name ``s_i`` for ``log_softmax(logit_s)`` before the ranking, so its non-target order adds the weak head's
probabilities to the student's log-probabilities. That is the default here; ``--uskd_rank_probs`` ranks by
probabilities, s / (1 - s_y), the form the paper writes. Ranking ties are broken as torch.sort breaks them.

Defaults from the official configs: CIFAR-100 (``configs/distillers/cifar100/res18_sd_cifar.py``) alpha 0.1,
beta 0.1, mu 0.1; ImageNet (``configs/distillers/imagenet/*_sd_img.py``) alpha 1, beta 0.1, mu 0.005. The
CIFAR recipe is what that config runs under mmengine: ``configs/_base_/schedules/cifar10_bs128.py`` (SGD lr 0.1,
momentum 0.9, weight decay 1e-4, x0.1 at epochs 100 and 150, 200 epochs) with batch 8 x 16 = 128; the
``optimizer``/``lr_config`` lines of ``configs/resnet/resnet18_8xb16_cifar100.py`` (weight decay 5e-4, x0.2 at
60, 120, 160) are mmcls 0.x keys that mmengine does not read. On ImageNet the shared ImageNet recipe applies.
The deployed network is the plain zoo network: its run is the baseline's, ``<model>_uskd_<dataset>_trial_<t>``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from helper.run_files import RunFiles
from models.features import run_network
from models.lmcl import BASELINES
from models.registry import build_model, check_model_name

from .base import OnlineMethod, TrainStep, register

# configs/_base_/schedules/cifar10_bs128.py, the schedule res18_sd_cifar.py runs under (module text).
USKD_RECIPE = dict(epochs=200, batch_size=128, learning_rate=0.1, weight_decay=1e-4, lr_decay='step',
                   lr_decay_epochs='100,150')
# (alpha, beta, mu): res18_sd_cifar.py; every imagenet/*_sd_img.py
USKD_WEIGHTS = {'cifar': (0.1, 0.1, 0.1), 'imagenet': (1.0, 0.1, 0.005)}
SMOOTHING = 0.1  # the weak head's target: 0.9 one-hot + 0.1 / C
EPS = 1e-6       # in the ranking's denominators


def uskd_terms(weak_logits, logits, targets, alpha, beta, mu, rank_probs=False):
    """The three USKD terms, already weighted: {'uskd_target': alpha * L_t, 'uskd_nontarget': beta * L_non,
    'uskd_weak': L_weak (mu inside)}, for hard labels ``targets`` (see the module text)."""
    logits, weak_logits = at_least_fp32(logits), at_least_fp32(weak_logits)
    n, classes = logits.shape
    label = targets.view(n, 1)
    log_s = F.log_softmax(logits, dim=1)
    log_s_y = log_s.gather(1, label)
    # target: a soft label from the network's own confidence, detached
    s_y2 = log_s_y.detach().exp() ** 2
    p_t = s_y2 + 1 - s_y2.mean(0, keepdim=True)
    target = -(p_t * log_s_y).sum(1).mean()
    # weak head: label-smoothed cross-entropy, times mu
    log_w = F.log_softmax(weak_logits, dim=1)
    smooth = torch.full_like(log_w, SMOOTHING / classes).scatter_add_(
        1, label, torch.full_like(log_s_y, 1 - SMOOTHING))
    weak = -(mu * smooth * log_w).sum(1).mean()
    # non-target: a Zipf label over the ranking of the two heads' normalised non-target scores
    with torch.no_grad():
        w = log_w.exp()
        w_part = w / (1 - w.gather(1, label) + EPS)
        if rank_probs:
            s = log_s.exp()
            s_part = s / (1 - s.gather(1, label) + EPS)
        else:  # the official code: log-probabilities
            s_part = log_s / (1 - log_s_y + EPS)
        order = torch.sort(w_part + s_part, dim=1, descending=True)[1]
        place = torch.argsort(order, dim=1)  # 0-based place of each class in that order
        zipf = 1.0 / (place + 1).to(logits.dtype)
        keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, label, False)
        zipf = zipf[keep].view(n, classes - 1)
        zipf = zipf / zipf.sum(1, keepdim=True)
    log_ns = F.log_softmax(logits[keep].view(n, classes - 1), dim=1)
    nontarget = -(zipf * log_ns).sum(1).mean()
    return {'uskd_target': alpha * target, 'uskd_nontarget': beta * nontarget, 'uskd_weak': weak}


def pooled(feature):
    """Global average pooling of a map (mmcls' GlobalAveragePooling neck); a vector stays as it is."""
    return feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature


@register('uskd')
class USKD(OnlineMethod):
    """One zoo network with a weak linear head on an intermediate stage; CE + the USKD terms."""
    recipe = USKD_RECIPE
    command = 'python train_online_mcl.py --uskd --arch <zoo model> [--dataset imagenet]'

    def __init__(self, model, args, num_classes):
        super().__init__(model, args)
        self.alpha, self.beta, self.mu = args.uskd_alpha, args.uskd_beta, args.uskd_mu
        self.layer, self.rank_probs = args.uskd_layer, args.uskd_rank_probs
        was = model.training
        with torch.no_grad():
            size = 224 if args.dataset == 'imagenet' else 32
            param = next(model.parameters())
            feats = run_network(model.eval(), torch.zeros(2, 3, size, size, device=param.device), True, False).feats
        model.train(was)
        if not -len(feats) <= self.layer < len(feats):
            raise KDZooError(f"--uskd_layer {self.layer} is out of range for {args.peers[0]}, which has "
                             f"{len(feats)} features (0..{len(feats) - 1})")
        self.weak = nn.Linear(pooled(feats[self.layer]).shape[1], num_classes)

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('USKD (teacher-free self-KD, Yang et al. ICCV 2023; yzd-v/cls_KD)')
        group.add_argument('--uskd', action='store_true',
                           help='train one --arch network with USKD (a weak head, no teacher)')
        group.add_argument('--uskd_alpha', type=float, default=None,
                           help='weight of the target term (0.1; ImageNet 1: the official configs)')
        group.add_argument('--uskd_beta', type=float, default=None, help='weight of the non-target term (0.1)')
        group.add_argument('--uskd_mu', type=float, default=None,
                           help="weight of the weak head's loss (0.1; ImageNet 0.005)")
        group.add_argument('--uskd_layer', type=int, default=-3,
                           help="the zoo feature the weak head pools: -3, the stage before the last "
                                "(the official neck(fea_s[-2]))")
        group.add_argument('--uskd_rank_probs', action='store_true',
                           help="rank non-target classes by the student's probabilities (the paper's form); "
                                "default: its log-probabilities, as the official code does")

    @classmethod
    def networks(cls, args):
        if args.arch.startswith('lmcl_') or args.arch.startswith('one_'):
            raise KDZooError(f"--uskd trains one zoo network; give its name in --arch (e.g. --arch resnet32), "
                             f"not '{args.arch}'")
        return [check_model_name(BASELINES.get(args.arch, args.arch), args.dataset, '--arch')]

    @classmethod
    def check(cls, args):
        defaults = USKD_WEIGHTS['imagenet' if args.dataset == 'imagenet' else 'cifar']
        for dest, default in zip(('uskd_alpha', 'uskd_beta', 'uskd_mu'), defaults):
            if getattr(args, dest) is None:
                setattr(args, dest, default)
            if getattr(args, dest) < 0:
                raise KDZooError(f"--{dest} cannot be negative, got {getattr(args, dest):g}")

    @classmethod
    def build_network(cls, args, num_classes):
        return build_model(args.peers[0], num_classes, args.dataset)

    @classmethod
    def build(cls, args, num_classes):
        return cls(cls.build_network(args, num_classes), args, num_classes)

    def trainable_modules(self):
        return [self.model, self.weak]

    def step(self, batch, epoch):
        out = run_network(self.model, batch.images, True, False)
        weak_logits = self.weak(pooled(out.feats[self.layer]))
        losses = {'ce': F.cross_entropy(out.logits, batch.targets)}
        losses.update(uskd_terms(weak_logits, out.logits, batch.targets, self.alpha, self.beta, self.mu,
                                 self.rank_probs))
        return TrainStep(logits=out.logits, losses=losses)

    def settings_note(self, args):
        return (f"USKD alpha {self.alpha:g}, beta {self.beta:g}, mu {self.mu:g}, weak head on feature "
                f"{self.layer}{', ranked by probabilities' if self.rank_probs else ''}; ")

    @classmethod
    def run_name(cls, args):
        return f'{args.peers[0]}_uskd_{args.dataset}_trial_{args.trial}'

    @classmethod
    def run_files(cls, args):
        return RunFiles(args.save_root, 'online', cls.run_name(args), args.peers[0])
