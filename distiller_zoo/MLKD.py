"""MLKD: Jin, Wang and Lin, "Multi-Level Logit Distillation" (CVPR 2023), as its official code runs it
(Jin-Ying/Multi-Level-Logit-Distillation, ``mdistiller/distillers/KD_ours.py``, trainer ``ours``), and the
no-augmentation variant of zju-SWJ/RLD's mdistiller fork (``mdistiller/distillers/MLKD_NOAUG.py``).

Three alignments of the softened predictions p = softmax(z / T), each at five temperatures, T0 (``--mlkd_T``)
and 3, 5, 2, 6 (fixed in the code):
  instance  KL(p_t || p_s) summed over classes, batch mean, times T^2 (Hinton's KD);
  batch     ||P_t P_t^T - P_s P_s^T||^2 / B, the B x B correlation of the samples' predictions;
  class     ||P_t^T P_t - P_s^T P_s||^2 / C, the C x C correlation of the classes.

``mlkd`` (``KD_ours``) runs both networks on a weak view (crop and flip) and a strong one (its own crop and
flip, two RandAugment operations, Cutout: the same ``augment_list``, magnitudes and Cutout as NTCE-KD's, so
kdzoo's 'strong' view, dataset/strong_augment.py, is exactly it). What its ``forward_train`` computes, and
what is computed here by default, per unit of its KD weight:
  * the confidence "masks" are not per sample: each masked term is the batch-mean loss times the masked
    *fraction* (``(loss * mask).mean()`` on a scalar loss; the per-sample ``reduce=False`` is commented out).
    The sample mask keeps the teacher's weak-view top-1 probabilities at or below their median
    (``le`` of ``np.percentile(., 50)``), the class mask the classes whose summed weak-view probability is at
    or below the median over the classes;
  * weak view: the instance and batch terms at the five temperatures times the sample fraction, the class
    terms times the class fraction;
  * strong view: the instance terms at T0, 3 and 5 on the strong logits, unmasked, but those "at 2 and 6"
    read the *weak* logits (so the weak instance terms at 2 and 6 count twice, once unmasked);
  * the strong-view class and batch terms are computed and never added to the loss;
  * CE on each view, summed (not averaged): CE_WEIGHT * (CE(weak) + CE(strong)).
``mlkd_noaug`` is the weak-view part alone with CE on the weak view.

``--mlkd_paper`` gives instead the paper's form of the multi-level loss: no confidence masks, and on each
view the instance, batch and class terms at the five temperatures on that view's own logits.

Logit standardisation (Sun et al., CVPR 2024; sunshangquan/logit-standardization-KD's ``MLKD.py``, the same
code as RLD's): with ``args.logit_stand`` each *instance* term z-scores both logits per sample,
(z - mean) / (1e-7 + std) with the unbiased std, before dividing by T; the masks and the batch and class
terms stay on the raw logits, as there. Its tools/train.py then also sets the KD weight to 9 and T0 to 2
(``--kd-weight``, ``--base-temp``): that is the modifier's business, not this file's.

Defaults: the configs' loss weights, CE 0.1 and KD 0.9 (mdistiller's cfg.py defaults; the CIFAR-100 configs
set none) with T0 4, so ``-r 0.1 -a 0 -b 0.9``; on ImageNet CE 0.5, KD 0.5, T0 1 (``configs/imagenet/
r34_r18/kd_ours.yaml``, ``r50_mv2/kd_ours.yaml``). -b multiplies every MLKD term, as KD_WEIGHT does there.
Recipe (not set here; see docs/methods.md): CIFAR-100 batch 64, lr 0.025 (0.01 for ShuffleNet/MobileNet
students), weight decay 5e-4, lr x0.1 after epochs 150, 180, 210 whatever the length; epochs 240 in the
official repo's configs for same-family pairs (480 for wrn_40_2/vgg13/ResNet50 -> ShuffleV1/MobileNetV2,
960 for resnet32x4 -> ShuffleV1/V2), 480 for every pair in RLD's and LS's ``configs/cifar100/mlkd`` (960 for
resnet32x4 -> ShuffleV2); ``mlkd_noaug`` 240 (RLD's ``configs/cifar100/mlkd_noaug``, lr 0.05 or 0.01).
ImageNet: 100 epochs, batch 512, lr 0.1 (0.2 for ResNet50 -> MobileNet), x0.1 after 30, 60, 90, wd 1e-4.
"""
import torch
import torch.nn.functional as F

from helper.precision import at_least_fp32
from models.features import NetOutput
from .base import Distiller
from .flags import require
from .logit_stand import LogitStand, standardize as ls_standardize
from .registry import register

__all__ = ['MLKD_TEMPERATURES', 'mlkd_instance', 'mlkd_batch', 'mlkd_class',
           'confidence_fractions', 'mlkd_loss', 'MLKDNoAug', 'MLKD']

MLKD_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # after T0, in the code's order


def mlkd_instance(z_s, z_t, temperature, standardize=False):
    """T^2 * batch mean of KL(softmax(t/T) || softmax(s/T)), on z-scored logits with ``standardize`` (LS's
    ``standardize``: True or 'sample' is the official code's std, 'population' the paper's; see --ls_std)."""
    if standardize:
        std = standardize if isinstance(standardize, str) else 'sample'
        z_s, z_t = ls_standardize(z_s, std), ls_standardize(z_t, std)
    log_p_s = F.log_softmax(z_s / temperature, dim=1)
    p_t = F.softmax(z_t / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction='none').sum(1).mean() * temperature ** 2


def mlkd_batch(z_s, z_t, temperature):
    """Squared distance of the B x B prediction correlations P P^T, over B."""
    p_s, p_t = F.softmax(z_s / temperature, dim=1), F.softmax(z_t / temperature, dim=1)
    return ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / z_s.size(0)


def mlkd_class(z_s, z_t, temperature):
    """Squared distance of the C x C class correlations P^T P, over C."""
    p_s, p_t = F.softmax(z_s / temperature, dim=1), F.softmax(z_t / temperature, dim=1)
    return ((p_t.t() @ p_t - p_s.t() @ p_s) ** 2).sum() / z_s.size(1)


def confidence_fractions(z_t):
    """The official masks as the fractions they end up as: of the samples whose teacher top-1 probability is at
    most the batch median, and of the classes whose probability summed over the batch is at most the median
    over the classes (medians as numpy.percentile(., 50): the mean of the two middle values for an even count)."""
    p_t = F.softmax(z_t.detach(), dim=1)
    confidence = p_t.max(dim=1).values
    per_class = p_t.sum(dim=0)
    sample = (confidence <= torch.quantile(confidence, 0.5)).to(p_t.dtype).mean()
    klass = (per_class <= torch.quantile(per_class, 0.5)).to(p_t.dtype).mean()
    return sample, klass


def _levels(z_s, z_t, temperatures, standardize, sample, klass):
    """Instance + batch terms times ``sample``, class terms times ``klass``, over ``temperatures``."""
    total = 0
    for T in temperatures:
        total = total + mlkd_instance(z_s, z_t, T, standardize) * sample
    for T in temperatures:
        total = total + mlkd_class(z_s, z_t, T) * klass
    for T in temperatures:
        total = total + mlkd_batch(z_s, z_t, T) * sample
    return total


def mlkd_loss(logits_s, logits_t, temperature, strong_s=None, strong_t=None, standardize=False, paper=False):
    """MLKD's distillation terms, per unit weight, as KD_ours.forward_train (``strong_*`` given) or
    MLKD_NOAUG.forward_train (without), or the paper's unmasked per-view form with ``paper``.
    ``standardize`` z-scores the logits of the instance terms (logit standardisation)."""
    z_s, z_t = at_least_fp32(logits_s), at_least_fp32(logits_t).detach()
    temperatures = (temperature, *MLKD_TEMPERATURES)
    if paper:
        total = _levels(z_s, z_t, temperatures, standardize, 1, 1)
        if strong_s is not None:
            total = total + _levels(at_least_fp32(strong_s), at_least_fp32(strong_t).detach(), temperatures,
                                    standardize, 1, 1)
        return total
    sample, klass = confidence_fractions(z_t)
    total = _levels(z_s, z_t, temperatures, standardize, sample, klass)
    if strong_s is not None:
        zs_s, zs_t = at_least_fp32(strong_s), at_least_fp32(strong_t).detach()
        for T in (temperature, 3.0, 5.0):
            total = total + mlkd_instance(zs_s, zs_t, T, standardize)
        for T in (2.0, 6.0):  # the code's strong-view KD at 2 and 6 reads the weak logits
            total = total + mlkd_instance(z_s, z_t, T, standardize)
    return total


@register('mlkd_noaug')
class MLKDNoAug(LogitStand, Distiller):
    """gamma * CE + alpha * KD + beta * MLKD on the batch as it is (RLD's MLKD_NOAUG); defaults CE 0.1, -b 0.9,
    T0 4 (ImageNet 0.5, 0.5, 1).

    LS (--logit_stand, ``logit_stand.py``) z-scores the logits of the instance (KD) terms only, as LS's MLKD.py
    (neither the batch nor the class term), and its --kd-weight becomes -b (LS's train.py sets MLKD's KD_WEIGHT,
    which weighs all three terms) and --base-temp the base temperature; the LS README's MLKD runs use 2 and 6 for
    resnet32x4 -> ShuffleV2, vgg13 -> vgg8 and vgg13 -> MobileNetV2, 2 and 9 elsewhere."""
    default_weights = (0.1, 0.0, 0.9)
    imagenet_weights = (0.5, 0.0, 0.5)
    ls_temperatures, ls_weights = ('mlkd_T',), ('beta',)
    ls_published = {pair: {'base_temp': 2.0, 'kd_weight': 6.0}
                    for pair in (('resnet32x4', 'ShuffleV2'), ('vgg13', 'vgg8'), ('vgg13', 'MobileNetV2'))}

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.temperature, self.paper = args.mlkd_T, args.mlkd_paper
        self.standardize = self.ls_std if self.logit_stand else False

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('MLKD')
        group.add_argument('--mlkd_T', type=float, default=None,
                           help="MLKD's base temperature T0, used with 3, 5, 2 and 6 (4, mdistiller's cfg.py as "
                                "Jin-Ying/Multi-Level-Logit-Distillation's CIFAR-100 configs leave it; ImageNet 1, "
                                "its configs/imagenet/*/kd_ours.yaml). Published recipe: CIFAR-100 240 epochs in that "
                                "repo's configs (480/960 for ShuffleNet/MobileNet students), 480 in RLD's and LS's "
                                "mlkd configs, 240 for mlkd_noaug, lr decay at 150,180,210 throughout; ImageNet 100")
        group.add_argument('--mlkd_paper', action='store_true',
                           help="the paper's form: no confidence masks, each view's instance, batch and class terms "
                                "on its own logits (default: the official code's masked fractions, strong-view KD at "
                                "T 2 and 6 on the weak logits, no strong-view batch and class terms)")

    @staticmethod
    def settings(args):
        """Fill --mlkd_T for the data set and refuse a temperature that is not positive."""
        if args.mlkd_T is None:
            args.mlkd_T = 1.0 if args.dataset == 'imagenet' else 4.0
        require(args, positive=['mlkd_T'])

    def losses(self, out_s, out_t, batch, epoch):
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets)
        if self.beta:
            terms[self.name] = self.beta * mlkd_loss(out_s.logits, out_t.logits, self.temperature,
                                                     standardize=self.standardize, paper=self.paper)
        return terms


@register('mlkd')
class MLKD(MLKDNoAug):
    """MLKD with its weak and strong views (KD_ours): the student runs on both (``run_student``), the teacher's
    outputs on both come from the engine (``views``); CE (and KD when -a is given) summed over the views."""
    views = ('strong',)

    def run_student(self, student, batch):
        out_s = super().run_student(student, batch)
        out_s.views['strong'] = NetOutput(student(batch.view('strong')))
        return out_s

    def losses(self, out_s, out_t, batch, epoch):
        strong_s, strong_t = out_s.views['strong'].logits, out_t.views['strong'].logits
        weak = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets)
        strong = self.ce_kd_terms(strong_s, strong_t, batch.targets)
        terms = {key: weak[key] + strong[key] for key in weak}
        if self.beta:
            terms[self.name] = self.beta * mlkd_loss(out_s.logits, out_t.logits, self.temperature, strong_s,
                                                     strong_t, standardize=self.standardize, paper=self.paper)
        return terms
