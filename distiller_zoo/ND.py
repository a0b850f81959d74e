"""ND: Wang et al., "Improving Knowledge Distillation via Regularizing Feature Norm and Direction" (ECCV 2024),
as WangYZ1608/Knowledge-Distillation-via-ND runs it on CIFAR-100: KD++, DKD++, DIST++ and ReviewKD++.

ND works on the penultimate embedding, the pooled vector in front of the classifier. Every class k has a
direction e_k = c_k / |c_k|, where c_k is the teacher's mean embedding of class k over the training set
(training augmentation, teacher in eval mode). Per sample

    ND = 1 - <h_s, e_y> / max(|h_s|, |h_t|),

averaged over the batch. While the student's embedding is shorter than the teacher's, lowering ND both
turns h_s towards e_y and lengthens it up to the teacher's norm; once it is longer only the angle counts.
A student whose embedding width differs from the teacher's gets ``EmbTrans`` (BN1d -> Dropout(0.5) ->
Linear), trained with it and used for the ND term alone: the student's logits never pass through it.

``<method>++`` is a method with the ND term added; one mixin (``NDMixin``, ``nd_variant``) makes them all:
  * kd++ (nd_kd), dkd++ (nd_dkd), dist++ (nd_dist), reviewkd++ (nd_reviewkd) default to the weights of ND's
    scripts for the pair; a pair those scripts do not list gets their resnet32x4 -> resnet8x4 values;
  * every other logit-only method (``needs_feats`` False; mkl++ and ntce++ today) gets a ``++`` as well,
    with that method's own defaults and --nd_weight 1 (``register_plus_plus_variants``, which the package's
    ``__init__`` calls once every method file is imported).
Warm-up: ND multiplies its KD-type term by min(e / 20, 1) with a 0-based epoch e, so its first epoch has
no KD term. Our epochs are 1-based and our epoch k is ND's epoch k - 1, so the ++ methods multiply every
term of the base method except CE by min((epoch - 1) / --nd_warmup, 1). The base's own warm-up (the
``ramp`` of DKD, ReviewKD, MKL) is switched off, or the term would be ramped twice.

Class centres come from --centers, by default ``<teacher checkpoint stem>_center_emb_train.json`` beside the
teacher, and are computed and written there when that file is missing (``tools/nd_centers.py`` does the
same ahead of time). The file records the teacher it belongs to (a hash of its weights), the data set and
the class count; centres of another teacher, class count or width are refused. ND's own
``center_emb_train.json`` files ({"0": [...], "1": [...], ...}) are read too, with only the class count and
the width checked.

Where this differs from the ND code:
  * the loss is vectorised (the code loops over the samples in Python), and its denominator is kept
    above 1e-12 so that an all-zero pair of embeddings gives 1, not NaN;
  * centres are kept at full precision (the code rounds every embedding value, and every mean, to 4
    decimals), computed with the run's data seed at epoch 0 of the training stream;
  * the code's scripts load resnet56's centres whatever the teacher; here they are the teacher's own;
  * EmbTrans's initialisation touches only the projector (the code's loop also zeroes the bias of the
    student's classifier, since the student is a submodule of its EmbTrans);
  * ND's SGD is Nesterov's; here that is the shared --nesterov flag (scripts/run_nd_table.sh passes it).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.class_centers import (CENTERS_SUFFIX, centers_for_run, centers_record, check_centers, class_centers,
                                  compute_centers, default_centers_path, read_centers, teacher_fingerprint,
                                  write_centers)
from helper.recipe import pin, scheduled, unpin
from .DIST import DISTDistiller
from .DKD import DKD
from .KD import KD
from .ReviewKD import ReviewKD
from .flags import require
from .registry import register

__all__ = ['nd_loss', 'EmbTrans', 'class_centers', 'compute_centers', 'teacher_fingerprint',
           'default_centers_path', 'centers_record', 'write_centers', 'read_centers', 'check_centers', 'NDMixin',
           'nd_variant', 'KDPlusPlus', 'DKDPlusPlus', 'DISTPlusPlus', 'ReviewKDPlusPlus']

R56_R20, R32X4_R8X4, WRN40_2_WRN40_1 = ('resnet56', 'resnet20'), ('resnet32x4', 'resnet8x4'), ('wrn_40_2', 'wrn_40_1')
R50_MV2, R32X4_SV1, R32X4_SV2 = ('ResNet50', 'MobileNetV2'), ('resnet32x4', 'ShuffleV1'), ('resnet32x4', 'ShuffleV2')
R34_R18, R50_R18, R50_MV1 = ('ResNet34', 'ResNet18'), ('ResNet50', 'ResNet18'), ('ResNet50', 'MobileNetV1')


# ---------------------------------------------------------------------------------------------- the loss

def nd_loss(emb_s, emb_t, directions, targets):
    """Batch mean of 1 - <emb_s_i, directions[y_i]> / max(|emb_s_i|, |emb_t_i|).

    ``directions`` holds one unit vector per class; the teacher's embedding ``emb_t`` gets no gradient.
    """
    with torch.autocast(emb_s.device.type, enabled=False):
        s, t = emb_s.float(), emb_t.detach().float()
        projection = (s * directions[targets].float()).sum(dim=1)
        scale = torch.maximum(s.norm(dim=1), t.norm(dim=1)).clamp_min(1e-12)
        return (1 - projection / scale).mean()


class EmbTrans(nn.Module):
    """ND's projector from the student's embedding width to the teacher's: BN1d -> Dropout(0.5) -> Linear,
    with BN scale 1, BN shift 0 and linear bias 0."""

    def __init__(self, dim_s, dim_t):
        super().__init__()
        self.layers = nn.Sequential(nn.BatchNorm1d(dim_s), nn.Dropout(0.5), nn.Linear(dim_s, dim_t))
        nn.init.ones_(self.layers[0].weight)
        nn.init.zeros_(self.layers[0].bias)
        nn.init.zeros_(self.layers[2].bias)

    def forward(self, x):
        if self.training and x.shape[0] == 1:
            # BN has no batch statistics for one sample (an epoch's last batch can be that small): use the
            # running ones for this batch rather than stop the run.
            self.eval()
            try:
                return self.layers(x)
            finally:
                self.train()
        return self.layers(x)


# ---------------------------------------------------------------------------------------------- the ++ methods

class NDMixin:
    """Turns a Distiller class into its '++': the base's terms (all but CE under ND's warm-up) plus
    ``nd = --nd_weight * ND``. Put it first among the bases: ``class XPlusPlus(NDMixin, X)``.

    ``tuned`` maps 'cifar' / 'imagenet' to {(teacher, student): values} from ND's scripts and ``fallback``
    names the pair whose values other pairs get; ``apply_tuned`` turns a pair's values into (gamma, alpha,
    beta) and the base method's own flags, and the last value is the ND weight. Without a table the ++
    method has the base's defaults and --nd_weight 1.
    """
    needs_feats = True
    tuned = {}
    fallback = {}
    ls_published = {}  # under --logit_stand (LS) a '++' takes train.py's --base-temp 2, --kd-weight 9, not the
    #                    LS README's per-pair runs of the plain method

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.nd_weight, self.nd_warmup = args.nd_weight, scheduled(args, 'nd_warmup')
        dim_s, dim_t = probe_s.feats[-1].shape[1], probe_t.feats[-1].shape[1]
        self.projector = EmbTrans(dim_s, dim_t) if dim_s != dim_t else None
        centers = centers_for_run(args, teacher, data, probe_t.logits.shape[1], dim_t)
        self.register_buffer('directions', F.normalize(centers, dim=1).float())
        projector = f"EmbTrans {dim_s}->{dim_t}" if self.projector is not None else f"no projector ({dim_s}-d)"
        print(f"ND: weight {self.nd_weight:g}, {projector}, the base method's terms warmed up as "
              f"min((epoch - 1) / {self.nd_warmup}, 1)")

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('ND (kd++, dkd++, dist++, reviewkd++, and <logit method>++)')
        group.add_argument('--nd_weight', type=float, default=None,
                           help="weight of the ND term (default: ND's for the pair; 1 for methods ND did not tune)")
        group.add_argument('--nd_warmup', type=int, default=None,
                           help="epochs of ND's warm-up of the base method's terms, min((epoch - 1) / warmup, 1) "
                                "(20; ImageNet 5; not given, scaled by --epochs / 240 (ImageNet: / 100) unless "
                                "--no_recipe_scaling)")
        group.add_argument('--centers', default=None,
                           help='teacher class-centre file (default: <teacher checkpoint without .pth>'
                                f'{CENTERS_SUFFIX}; computed and written there when missing)')

    @classmethod
    def defaults_for(cls, args):
        values = cls.tuned_values(args)
        tuned_weights = cls.apply_tuned(args, *values[:-1]) if values else None
        base_weights = super().defaults_for(args)  # fills and checks the base method's own flags
        for name in list(getattr(args, 'recipe_pinned', None) or {}):
            unpin(args, name)  # the base's own warm-up is switched off (``ramp``); nd_warmup replaces it
        if args.nd_weight is None:
            args.nd_weight = values[-1] if values else 1.0
        cls.nd_settings(args)
        return tuned_weights or base_weights

    @classmethod
    def tuned_values(cls, args):
        """ND's values for the pair (or the fallback pair's), None when ND has none for this data set."""
        split = 'imagenet' if args.dataset == 'imagenet' else 'cifar'
        table = cls.tuned.get(split)
        if not table:
            return None
        return table.get((args.model_t, args.model_s), table[cls.fallback[split]])

    @classmethod
    def apply_tuned(cls, args, *values):
        raise NotImplementedError

    @staticmethod
    def nd_settings(args):
        """Fill --nd_weight and --nd_warmup not given and check them."""
        if getattr(args, 'nd_weight', None) is None:
            args.nd_weight = 1.0
        if getattr(args, 'nd_warmup', None) is None:
            args.nd_warmup = 5 if getattr(args, 'dataset', 'cifar100') == 'imagenet' else 20
            pin(args, 'nd_warmup')
        require(args, non_negative=['nd_weight', 'nd_warmup'])

    def ramp(self, epoch):
        """The base method's own warm-up, switched off: ``nd_ramp`` replaces it."""
        return 1.0

    def nd_ramp(self, epoch):
        """ND's min(e / warmup, 1) with e = epoch - 1, ND's 0-based count (1 with no warm-up)."""
        return min((epoch - 1) / self.nd_warmup, 1.0) if self.nd_warmup else 1.0

    def embed(self, embedding):
        """The student's embedding in the teacher's width."""
        return embedding if self.projector is None else self.projector(embedding)

    def losses(self, out_s, out_t, batch, epoch):
        ramp = self.nd_ramp(epoch)
        terms = {key: value if key == 'ce' else ramp * value
                 for key, value in super().losses(out_s, out_t, batch, epoch).items()}
        if self.nd_weight:
            terms['nd'] = self.nd_weight * nd_loss(self.embed(out_s.feats[-1]), out_t.feats[-1], self.directions,
                                                   batch.targets)
        return terms


def nd_variant(base):
    """The class behind ``--distill <base's name>++``: ``base`` with NDMixin in front."""
    return type(f'{base.__name__}PlusPlus', (NDMixin, base),
                {'__doc__': f"{base.name} + ND: NDMixin on {base.__name__}.", '__module__': __name__})


@register('kd++', 'nd_kd')
class KDPlusPlus(NDMixin, KD):
    """KD++: CE + ramp * alpha * KD + ND (ND's train_cifar_kd.py: cls 1, KD weight in -a, T = --kd_T 4)."""
    # CIFAR/train_cifar.sh; ImageNet/train.sh (ND's ImageNet runs use T 1: pass --kd_T 1 there)
    tuned = {'cifar': {R56_R20: (1.0, 2.0), R32X4_R8X4: (3.5, 2.0), WRN40_2_WRN40_1: (1.0, 1.5),
                       R50_MV2: (3.0, 0.5), R32X4_SV1: (2.5, 1.5), R32X4_SV2: (4.0, 0.5)},
             'imagenet': {R34_R18: (2.5, 1.0), R50_R18: (4.0, 1.0), R50_MV1: (4.0, 1.0)}}
    fallback = {'cifar': R32X4_R8X4, 'imagenet': R34_R18}

    @classmethod
    def apply_tuned(cls, args, kd_weight):
        return 1.0, kd_weight, 0.0


@register('dkd++', 'nd_dkd')
class DKDPlusPlus(NDMixin, DKD):
    """DKD++: CE + ramp * (dkd_alpha * TCKD + dkd_beta * NCKD) + ND (ND's train_cifar_dkd.py, T 4); -b stays 1."""
    # CIFAR/train_cifar.sh (alpha, beta, nd); ImageNet/train.sh
    tuned = {'cifar': {R56_R20: (2.5, 4.0, 3.5), R32X4_R8X4: (2.0, 8.0, 0.5), WRN40_2_WRN40_1: (1.0, 6.0, 1.0),
                       R50_MV2: (0.5, 8.0, 1.0), R32X4_SV1: (0.5, 8.0, 4.0), R32X4_SV2: (0.5, 6.0, 0.5)},
             'imagenet': {R34_R18: (0.8, 0.5, 1.0), R50_R18: (0.6, 0.5, 2.0), R50_MV1: (0.8, 1.0, 1.0)}}
    fallback = {'cifar': R32X4_R8X4, 'imagenet': R34_R18}

    @classmethod
    def apply_tuned(cls, args, alpha, beta):
        if args.dkd_alpha is None:
            args.dkd_alpha = alpha
        if args.dkd_beta is None:
            args.dkd_beta = beta
        return 1.0, 0.0, 1.0


@register('dist++', 'nd_dist')
class DISTPlusPlus(NDMixin, DISTDistiller):
    """DIST++: CE + ramp * beta * DIST(tau 4, inter 1, intra 1) + ND (ND's DIST++/train_dist.py)."""
    tuned = {'cifar': {R56_R20: (2.0, 1.0), R32X4_R8X4: (1.5, 4.0), WRN40_2_WRN40_1: (2.5, 3.0),
                       R50_MV2: (7.0, 1.0), R32X4_SV1: (2.5, 3.0), R32X4_SV2: (3.0, 4.0)}}  # DIST++/train_dist.sh
    fallback = {'cifar': R32X4_R8X4}

    @classmethod
    def apply_tuned(cls, args, dist_weight):
        return 1.0, 0.0, dist_weight


@register('reviewkd++', 'nd_reviewkd')
class ReviewKDPlusPlus(NDMixin, ReviewKD):
    """ReviewKD++: CE + ramp * beta * HCL + ND (ND's ReviewKD++/train_reviewkd.py)."""
    tuned = {'cifar': {R56_R20: (1.2, 1.0), R32X4_R8X4: (8.0, 1.0), WRN40_2_WRN40_1: (5.0, 4.0),
                       R50_MV2: (6.0, 2.0), R32X4_SV1: (7.0, 1.0), R32X4_SV2: (8.0, 1.5)}}  # train_reviewkd.sh
    fallback = {'cifar': R32X4_R8X4}

    @classmethod
    def apply_tuned(cls, args, review_weight):
        return 1.0, 0.0, review_weight


def register_plus_plus_variants(registry):
    """Register '<name>++' in ``registry`` for every logit-only method it holds that has none yet. The
    package's ``__init__`` calls it once, after it has imported every method file."""
    for name, cls in list(registry.items()):
        if name == cls.name and not cls.needs_feats and f'{name}++' not in registry:
            registry.register(f'{name}++')(nd_variant(cls))
