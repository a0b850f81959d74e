"""SDD: Wei et al., "Scale Decoupled Distillation" (CVPR 2024), as shicaiwei123/SDD-CVPR2024 runs it
(mdistiller/distillers/KD.py ``sdd_kd_loss``, SDD_DKD.py ``multi_dkd``, SDD_nkd.py ``multi_nkd_loss``; its
models' ``SPP``, mdistiller/models/cifar/utils.py; configs/ and the teacher_*.sh, run.sh scripts).

Both networks' last feature maps (the maps they pool into their classifiers) are average-pooled at the scales
of ``M`` (``--sdd_M``: 1,2,4 gives 1 + 4 + 16 = 21 regions) and each network's own classifier is applied to
every region's mean feature (``models.features.region_logits``: SDD's SPP pools the map to 4x4 first and the
2x2 and 1x1 from that). A logit loss (KD, DKD or NKD) is computed per region and sample, and weighted by the
teacher's predictions: a region whose prediction is right or wrong as the teacher's prediction on the whole
map is (region 0, the 1x1 one) is *consistent* (weight 1), one that disagrees with it is *complementary*
(``--sdd_weight``, 2 in the code). The loss is sum(weight * loss) / (regions * batch). With ``--sdd_M 1`` the
code runs the plain loss on the networks' logits, and so does this file.

Read from the code (it is the default here):
  * the per-region losses are averaged over regions and batch, sum / (N * B), in all three (``multi_dkd`` divides
    inside its ``dkd_loss`` by the repeated targets' length, N * B, then sums), not summed over regions;
  * SDD-NKD's non-target term runs over every class: its ``nkd_loss`` builds the mask with
    ``scatter_(1, label, 1)`` on ones, which keeps the target (the CIFAR NKD port's mask bug, see NKD.py).
    ``--sdd_nkd_target_removed`` gives NKD's paper form. Its T, gamma and warm-up are the DKD section's
    (``DKD.T``, ``DKD.BETA``, ``DKD.WARMUP``): T 4, gamma 8 (6 or 2 per pair), 20 epochs on CIFAR-100;
  * SDD-KD reads mdistiller's KD section, which neither its CIFAR nor its ImageNet configs set: CE 0.1,
    KD 0.9, T 4 everywhere, and no warm-up (its ramp is commented out);
  * SDD-DKD ramps in over ``cfg.warmup``: train_origin.py's ``--warmup`` 20 (CIFAR), train.py's 1.0 (ImageNet).
Not reproduced: the code sets a non-finite SDD loss (and SDD-KD's NaN entries) to 0 and trains on; here
such a step stops the run as any non-finite loss does.

Defaults, from the configs and the ``--M`` of the runs in the scripts (unlisted pairs: train.py's --M
[1,2,4], mdistiller's DKD.BETA 8 / ImageNet 0.5):
  sdd_kd   -r 0.1 -a 0 -b 0.9, T --kd_T 4; M 1,2 for resnet32x4->resnet8x4 and vgg13->vgg8, else 1,2,4
  sdd_dkd  -r 1 -a 0 -b 1, --dkd_alpha 1, --dkd_beta per pair (``SDD_BETA``), T 4 / warm-up 20 (ImageNet
           T 1, warm-up 1, beta 0.5; 2 for ResNet50->MobileNetV1, SDD's 'MobileNetV2_sdd'); M 1,2 for
           vgg13->vgg8 and ResNet34->ResNet18, else 1,2,4
  sdd_nkd  -r 1 -a 0 -b 1, --sdd_nkd_gamma as sdd_dkd's beta, --sdd_nkd_T 4 / --sdd_nkd_warmup 20 (ImageNet
           1 / 1); M 1,2 for resnet32x4->resnet8x4, ResNet50->vgg8, vgg13->vgg8, vgg13->MobileNetV2 (two runs
           of [1,2], one of [1,2,4] in teacher_vgg.sh), wrn_40_2->vgg8, else 1,2,4
"""
import torch
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from helper.recipe import scheduled
from models.features import check_classifies_regions, region_logits
from .DKD import DKD, dkd_loss, dkd_parts
from .NKD import nkd_loss, nkd_parts
from .base import Distiller, kd_loss
from .flags import add_ramp_arguments, require, settle_ramp
from .registry import register
from .teacher import Borrowed, TeacherRequest

__all__ = ['region_weights', 'sdd_loss', 'sdd_kd_loss', 'sdd_dkd_loss', 'sdd_nkd_loss', 'SDDKD', 'SDDDKD', 'SDDNKD']

SCALES = {'1': (1,), '1,2': (1, 2), '1,2,4': (1, 2, 4)}  # the SPP's three settings
# (teacher, student) pairs whose runs in SDD's scripts use --M [1,2]; every other pair [1,2,4]
TWO_SCALES = {
    'sdd_kd': {('resnet32x4', 'resnet8x4'), ('vgg13', 'vgg8')},
    'sdd_dkd': {('vgg13', 'vgg8'), ('ResNet34', 'ResNet18')},
    'sdd_nkd': {('resnet32x4', 'resnet8x4'), ('ResNet50', 'vgg8'), ('vgg13', 'vgg8'), ('vgg13', 'MobileNetV2'),
                ('wrn_40_2', 'vgg8')},
}
# DKD.BETA of configs/cifar100/sdd_dkd/*.yaml and sdd_nkd/*.yaml (the same per pair); others cfg.py's 8.0
SDD_BETA = {('vgg13', 'MobileNetV2'): 6.0, ('vgg13', 'ShuffleV1'): 6.0, ('vgg13', 'vgg8'): 6.0,
            ('wrn_40_2', 'MobileNetV2'): 6.0, ('wrn_40_2', 'wrn_16_2'): 6.0, ('wrn_40_2', 'wrn_40_1'): 6.0,
            ('resnet110', 'resnet32'): 2.0, ('resnet56', 'resnet20'): 2.0}
# configs/imagenet/r34_r18/sdd_*.yaml 0.5, r50_mv2/sdd_*.yaml 2.0 (its 'MobileNetV2' is a MobileNetV1)
SDD_IMAGENET_BETA = {('ResNet50', 'MobileNetV1'): 2.0}


def sdd_beta(args):
    pair = (args.model_t, args.model_s)
    return SDD_IMAGENET_BETA.get(pair, 0.5) if args.dataset == 'imagenet' else SDD_BETA.get(pair, 8.0)


def region_weights(logits_t, targets, weight=2.0):
    """(regions, batch) weights from the teacher's region logits (B, classes, regions): 1 where the teacher's
    prediction on the region is right exactly when its prediction on region 0 (the whole map) is, ``weight``
    where not. Region 0 is always consistent."""
    right = logits_t.argmax(1) == targets[:, None]
    ones = torch.ones(right.shape, dtype=torch.float32, device=right.device)
    return torch.where(right == right[:, :1], ones, ones * weight).T


def sdd_loss(per_row, logits_s, logits_t, targets, weight=2.0):
    """SDD's reduction of a per-row logit loss over the regions: the (B, classes, N) logits become N * B rows,
    region by region, ``per_row(rows_s, rows_t, targets repeated N times)`` gives one loss each, and the result
    is sum(region_weights * loss) / (N * B)."""
    batch, classes, count = logits_s.shape
    rows_s = logits_s.permute(2, 0, 1).reshape(count * batch, classes)
    rows_t = logits_t.permute(2, 0, 1).reshape(count * batch, classes)
    losses = per_row(rows_s, rows_t, targets.repeat(count))
    weights = region_weights(logits_t, targets, weight).reshape(-1).to(losses.dtype)
    return (losses * weights).sum() / (count * batch)


def sdd_kd_loss(logits_s, logits_t, targets, temperature, weight=2.0):
    """SDD-KD: T^2 * KL(softmax(t/T) || softmax(s/T)) per region and sample, SDD-weighted."""
    def per_row(s, t, y):
        log_p_s = F.log_softmax(at_least_fp32(s) / temperature, dim=1)
        log_p_t = F.log_softmax(at_least_fp32(t) / temperature, dim=1)
        return F.kl_div(log_p_s, log_p_t, reduction='none', log_target=True).sum(1) * temperature ** 2
    return sdd_loss(per_row, logits_s, logits_t, targets, weight)


def sdd_dkd_loss(logits_s, logits_t, targets, alpha, beta, temperature, weight=2.0):
    """SDD-DKD: alpha * TCKD + beta * NCKD per region and sample (``dkd_parts``), SDD-weighted."""
    def per_row(s, t, y):
        tckd, nckd = dkd_parts(s, t, y, temperature)
        return alpha * tckd + beta * nckd
    return sdd_loss(per_row, logits_s, logits_t, targets, weight)


def sdd_nkd_loss(logits_s, logits_t, targets, temperature, gamma, all_classes=True, weight=2.0):
    """SDD-NKD: NKD's target term + gamma * T^2 * its non-target term per region and sample (``nkd_parts``,
    over every class by default, as SDD's code), SDD-weighted."""
    def per_row(s, t, y):
        loss_target, loss_non = nkd_parts(s, t, y, temperature, all_classes)
        return loss_target + gamma * temperature ** 2 * loss_non
    return sdd_loss(per_row, logits_s, logits_t, targets, weight)


class ScaleDecoupled(Distiller):
    """What the three SDD methods share: the regions' logits of both networks, the weighting, ``--sdd_M``."""
    needs_feats = True  # the pooled maps are features (and a '++' variant would be untested)
    needs_pooled_map = True

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        for net, model in ((student, args.model_s), (teacher, args.model_t)):
            check_classifies_regions(net, model, self.name)
        self.scales, self.weight = SCALES[args.sdd_M], args.sdd_weight
        self.teacher_net = Borrowed(teacher)  # its classifier reads the teacher's regions: never trained here

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('SDD (sdd_kd, sdd_dkd, sdd_nkd)')
        group.add_argument('--sdd_M', default=None,
                           help="scales the last feature map is pooled at: 1,2,4 (21 regions), 1,2 or 1 (SDD's --M, "
                                "[1,2,4] also accepted; default SDD's per pair, see the method's docstring)")
        group.add_argument('--sdd_weight', type=float, default=2.0,
                           help='weight of the complementary regions, whose teacher prediction is right where the '
                                "whole map's is wrong or the reverse (2, hard-coded in SDD's code)")

    @classmethod
    def defaults_for(cls, args):
        if args.sdd_M is None:
            args.sdd_M = '1,2' if (args.model_t, args.model_s) in TWO_SCALES[cls.name] else '1,2,4'
        spelled = str(args.sdd_M).replace(' ', '').strip('[]')
        if spelled not in SCALES:
            raise KDZooError(f"--sdd_M must be 1,2,4, 1,2 or 1 (SDD's settings), got '{args.sdd_M}'")
        args.sdd_M = spelled
        require(args, non_negative=['sdd_weight'])
        return super().defaults_for(args)

    def teacher_request(self):
        return TeacherRequest(True, False, pooled_map=True)

    def forward_train(self, student, batch, out_t, epoch):
        """CE (and KD when weighted) on the logits, the SDD term on the regions' logits (on the logits
        themselves with --sdd_M 1, as the code)."""
        out_s = self.run_student(student, batch)
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets)
        if self.beta:
            if self.scales == (1,):
                loss = self.global_loss(out_s.logits, out_t.logits, batch.targets)
            else:
                with torch.no_grad():
                    regions_t = region_logits(self.teacher_net.module, out_t.pooled_map, self.scales)
                regions_s = region_logits(student, out_s.pooled_map, self.scales)
                loss = self.multi_loss(regions_s, regions_t, batch.targets)
            terms[self.name] = self.beta * self.ramp(epoch) * loss
        return out_s.logits, terms

    def global_loss(self, logits_s, logits_t, targets):
        raise NotImplementedError

    def multi_loss(self, regions_s, regions_t, targets):
        raise NotImplementedError


@register('sdd_kd')
class SDDKD(ScaleDecoupled):
    """gamma * CE + alpha * KD + beta * SDD-KD at --kd_T; SDD's weights CE 0.1, SDD-KD 0.9 (mdistiller's KD
    section), T 4, no warm-up."""
    default_weights = (0.1, 0.0, 0.9)

    def global_loss(self, logits_s, logits_t, targets):
        return kd_loss(logits_s, logits_t, self.kd_T)

    def multi_loss(self, regions_s, regions_t, targets):
        return sdd_kd_loss(regions_s, regions_t, targets, self.kd_T, self.weight)


@register('sdd_dkd')
class SDDDKD(ScaleDecoupled, DKD):
    """gamma * CE + alpha * KD + beta * min(epoch / warmup, 1) * SDD-DKD(--dkd_alpha, --dkd_beta, --dkd_T);
    DKD's flags, with SDD's per-pair --dkd_beta (``SDD_BETA``)."""
    ls_defined = False  # its regional DKD terms read raw logits: --logit_stand is refused, not ignored

    @staticmethod
    def settings(args):
        if args.dkd_beta is None:
            args.dkd_beta = sdd_beta(args)
        DKD.settings(args)

    def global_loss(self, logits_s, logits_t, targets):
        return dkd_loss(logits_s, logits_t, targets, self.dkd_alpha, self.dkd_beta, self.temperature)

    def multi_loss(self, regions_s, regions_t, targets):
        return sdd_dkd_loss(regions_s, regions_t, targets, self.dkd_alpha, self.dkd_beta, self.temperature,
                            self.weight)


@register('sdd_nkd')
class SDDNKD(ScaleDecoupled):
    """gamma * CE + alpha * KD + beta * min(epoch / warmup, 1) * SDD-NKD(--sdd_nkd_T, --sdd_nkd_gamma), the
    non-target term over every class unless --sdd_nkd_target_removed."""
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.temperature, self.nkd_gamma = args.sdd_nkd_T, args.sdd_nkd_gamma
        self.all_classes, self.warmup = not args.sdd_nkd_target_removed, scheduled(args, 'sdd_nkd_warmup')

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('SDD-NKD')
        add_ramp_arguments(group, 'sdd_nkd', 'SDD-NKD')
        group.add_argument('--sdd_nkd_gamma', type=float, default=None,
                           help="weight of NKD's non-target term (SDD's DKD.BETA: 8, 6 or 2 per pair; ImageNet 0.5, "
                                "2 for ResNet50->MobileNetV1)")
        group.add_argument('--sdd_nkd_target_removed', action='store_true',
                           help="the non-target term without the target class, as NKD's paper (SDD's code keeps "
                                "every class)")

    @staticmethod
    def settings(args):
        if args.sdd_nkd_gamma is None:
            args.sdd_nkd_gamma = sdd_beta(args)
        require(args, non_negative=['sdd_nkd_gamma'])
        settle_ramp(args, 'sdd_nkd')

    def global_loss(self, logits_s, logits_t, targets):
        return nkd_loss(logits_s, logits_t, targets, self.temperature, self.nkd_gamma, self.all_classes)

    def multi_loss(self, regions_s, regions_t, targets):
        return sdd_nkd_loss(regions_s, regions_t, targets, self.temperature, self.nkd_gamma, self.all_classes,
                            self.weight)
