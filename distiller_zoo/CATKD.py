"""CAT-KD: Guo et al., "Class Attention Transfer Based Knowledge Distillation" (CVPR 2023), as
GzyAftermath/CAT-KD runs it (mdistiller/distillers/CAT_KD.py, its ``*_test`` models, tools/train.py, configs/).

The class activation maps (CAMs) of a network are its classifier's weight applied as a bias-free 1x1 conv to
the map it pools into the classifier (``models.features.class_activation_maps``): their spatial mean is the
logits less the bias. Both networks' CAMs are average-pooled to ``--cat_resolution`` x ``--cat_resolution``,
L2-normalised over the spatial positions of each map when ``--cat_normalize``, and matched by MSE:

    loss = CE + beta * MSE(norm(pool(CAM_s)), norm(pool(CAM_t)))

How the code gets there: tools/train.py (``if_test: True`` in every config) swaps both networks for their
``*_test`` versions, whose classifier is a bias-free 1x1 conv (``conv_test``) before the pooling; the
teacher's is loaded with its fc weight, its bias dropped. The student's ``conv_test`` is its classifier.
Here the student keeps its zoo classifier (the deployed network is the plain student), whose weight is its
CAMs' conv; the one difference is the Linear's bias, which the ``_test`` student lacks: it enters the logits
(so the CE) and not the CAMs.

Defaults per pair from configs/cifar100/CAT_KD/*.yaml and configs/imagenet/CAT-KD/*.yaml (``PAIRS``:
CAT_loss_weight as -b, CAM_RESOLUTION, IF_NORMALIZE; CE weight 1); other pairs cfg.py's 400, 2, normalised.
``onlyCAT`` (the CAT rows, CE weight 0) is ``-r 0``; ``--cat_binarize`` is IF_BINARIZE (the teacher's CAMs
thresholded at their mean absolute value, CAT_Binarization's config). Not ported: the transfer of part of
the CAMs (IF_OnlyTransferPartialCAMs, an exploration whose 'lowest' strategy hard-codes 100 classes).
"""
import torch
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from models.features import check_classifies_regions, class_activation_maps
from .base import Distiller
from .registry import register
from .teacher import Borrowed, TeacherRequest

__all__ = ['cat_loss', 'binarize_cams', 'CATKD']

# (teacher, student): (CAT_loss_weight, CAM_RESOLUTION, IF_NORMALIZE)
PAIRS = {('resnet56', 'resnet20'): (0.7, 2, False), ('resnet110', 'resnet32'): (1.8, 2, False),
         ('resnet32x4', 'resnet8x4'): (15.0, 2, False), ('resnet32x4', 'ShuffleV1'): (600.0, 4, True),
         ('resnet32x4', 'ShuffleV2'): (600.0, 4, True), ('ResNet50', 'MobileNetV2'): (40.0, 2, True),
         ('vgg13', 'MobileNetV2'): (15.0, 2, True), ('vgg13', 'vgg8'): (4.5, 2, False),
         ('wrn_40_2', 'ShuffleV1'): (80.0, 4, True), ('wrn_40_2', 'wrn_16_2'): (12.0, 2, False),
         ('wrn_40_2', 'wrn_40_1'): (1.5, 2, False),
         # ImageNet (its 'MobileNetV2' is a MobileNetV1)
         ('ResNet34', 'ResNet18'): (0.5, 4, False), ('ResNet50', 'MobileNetV1'): (10.0, 2, True)}
FALLBACK = (400.0, 2, True)  # mdistiller/engine/cfg.py's CAT_KD section


def binarize_cams(cams):
    """IF_BINARIZE: 1 where a CAM exceeds its own mean absolute value (the L1 norm over h * w), else 0."""
    threshold = cams.abs().sum((2, 3), keepdim=True) / (cams.shape[2] * cams.shape[3])
    return (cams > threshold).to(cams.dtype)


def cat_loss(cams_s, cams_t, resolution, normalize):
    """CAT_loss: both CAMs average-pooled to ``resolution`` x ``resolution``, L2-normalised over the positions
    of each (sample, class) map when ``normalize`` (F.normalize, eps 1e-12), then the MSE (mean over all)."""
    with torch.autocast(cams_s.device.type, enabled=False):
        s = F.adaptive_avg_pool2d(at_least_fp32(cams_s), resolution)
        t = F.adaptive_avg_pool2d(cams_t.to(s.dtype), resolution)
        if normalize:
            s, t = F.normalize(s, dim=(2, 3)), F.normalize(t, dim=(2, 3))
        return F.mse_loss(s, t)


@register('catkd', 'cat_kd')
class CATKD(Distiller):
    """gamma * CE + alpha * KD + beta * CAT(--cat_resolution, --cat_normalize); CE 1, -b per pair."""
    needs_feats = True  # the pooled maps are features (and a '++' variant would be untested)
    needs_pooled_map = True

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        for net, model in ((student, args.model_s), (teacher, args.model_t)):
            check_classifies_regions(net, model, 'CAT-KD')
        classes_s, classes_t = student.get_classifier().out_features, teacher.get_classifier().out_features
        if classes_s != classes_t:
            raise KDZooError(f"CAT-KD matches the class maps of {args.model_s} ({classes_s} classes) and "
                             f"{args.model_t} ({classes_t}): they must classify the same classes")
        self.resolution, self.normalize, self.binarize = args.cat_resolution, args.cat_normalize, args.cat_binarize
        self.teacher_net = Borrowed(teacher)  # its classifier makes the teacher's CAMs: never trained here

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('CAT-KD')
        group.add_argument('--cat_resolution', type=int, default=None,
                           help="side of the pooled class maps (CAM_RESOLUTION: 2, or 4 per CAT-KD's configs)")
        group.add_argument('--cat_normalize', type=int, choices=(0, 1), default=None,
                           help="1: L2-normalise the pooled maps (IF_NORMALIZE, per pair in CAT-KD's configs)")
        group.add_argument('--cat_binarize', action='store_true',
                           help="binarise the teacher's maps at their mean absolute value (IF_BINARIZE)")

    @classmethod
    def defaults_for(cls, args):
        weight, resolution, normalize = PAIRS.get((args.model_t, args.model_s), FALLBACK)
        if args.cat_resolution is None:
            args.cat_resolution = resolution
        if args.cat_normalize is None:
            args.cat_normalize = int(normalize)
        if args.cat_resolution < 1:
            raise KDZooError(f"--cat_resolution must be at least 1, got {args.cat_resolution}")
        return 1.0, 0.0, weight

    def teacher_request(self):
        return TeacherRequest(True, False, pooled_map=True)

    def forward_train(self, student, batch, out_t, epoch):
        out_s = self.run_student(student, batch)
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets)
        if self.beta:
            with torch.no_grad():
                cams_t = class_activation_maps(self.teacher_net.module, out_t.pooled_map)
                if self.binarize:
                    cams_t = binarize_cams(cams_t)
            cams_s = class_activation_maps(student, out_s.pooled_map)
            terms[self.name] = self.beta * cat_loss(cams_s, cams_t, self.resolution, bool(self.normalize))
        return out_s.logits, terms
