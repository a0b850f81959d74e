"""NORM: Liu et al., "NORM: Knowledge Distillation via N-to-One Representation Matching" (ICLR 2023).

A feature transform (FT) is put on the map the student average-pools into its classifier: a 1x1 conv
+ BN that expands C_s channels to N * C_t (the student feature that is matched), a 1x1 conv + BN that
contracts them back to C_s, and an identity shortcut (``--plain_ft``: none). Each of the N channel
groups of the expansion must reproduce the teacher's last conv map. Everything in the FT is linear,
so after training it folds into the classifier and the deployed network is the plain student.

Paper vs code (OSVAI/NORM; the code wins):
  * the loss is weighted by an epoch multiplier (``norm_epoch_weight``), which the paper does not list;
  * before CE and KD both networks' logits are layer-normalised over the classes (no affine, eps 1e-7)
    and scaled by ``-c/--ceta`` (2.5); ``--no_logit_norm`` switches that off. The same ``-c`` is the
    CRD weight of ``norm_crd``;
  * NORM's loop runs epochs 0..240 with the lr decayed when epoch > 150, 180, 210. Our epochs are
    1-based and get NORM's multiplier and lr for the same epoch number: only NORM's extra first epoch
    (its epoch 0: w = 0.1, initial lr) is not run.
Where this file differs from the code:
  * the FT always sits on the map that is pooled (so it folds into the classifier). That is NORM's
    place for ResNet, VGG, ShuffleNet and MobileNetV2 students; for WRN students NORM puts it before
    the final BN + ReLU, which could not be folded into the classifier;
  * NORM's ShuffleV1/V2 student files add the shortcut to the wrong tensor (the input image) and fail
    for N > 1; here every student gets the same FT;
  * NORM_CRD as released unpacks a CRD batch wrongly and never runs; ``norm_crd`` runs it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dataset.batches import ContrastSpec
from helper.errors import KDZooError
from models.deploy import register_deploy
from models.imagenet.mobilenetv2 import MobileNetV2 as ImageNetMobileNetV2
from models.mobilenetv2 import CifarMobileNetV2
from models.registry import build_model
from models.ShuffleNetv2 import ShuffleNetV2
from models.wrn import WideResNet
from .CRD import CRD_FLAGS, crd_criterion
from .base import Distiller, kd_loss, register

__all__ = ['NORMFeatureTransform', 'norm_loss', 'norm_epoch_weight', 'norm_logits', 'fold_norm_checkpoint',
           'NORM', 'NORMKD', 'NORMCRD']

# NORM's multiplier of its loss: (first epoch that is past the step, weight); 0.1 after the last step.
_EPOCH_STEPS = {'cifar': ((10, 0.1), (20, 0.5), (180, 1.0), (210, 0.5)),
                'imagenet': ((5, 0.1), (15, 0.5), (60, 0.9), (80, 0.5))}

# Families whose pooled map is not feats[-2]: the submodule that outputs it, and whether a ReLU follows.
_POOLED_MAP_SOURCES = {
    WideResNet: lambda net: (net.bn1, True),
    ShuffleNetV2: lambda net: (net.bn2, True),
    CifarMobileNetV2: lambda net: (net.conv2, False),
    ImageNetMobileNetV2: lambda net: (net.features[-1], False),
}

# NORM's own spellings, used when --distill is one of its names (the SimKD repo's -c/-s mean --cls/--soft).
_NORM_FLAGS = {'-c': '--ceta', '-s': '--co-sponge'}


class NORMFeatureTransform(nn.Module):
    """``expand`` (1x1 conv C_s -> N*C_t + BN), ``contract`` (1x1 conv back to C_s + BN), and the identity
    shortcut unless ``residual=False``. ``forward`` returns (expanded map, transformed map)."""

    def __init__(self, in_channels, expanded_channels, residual=True):
        super().__init__()
        self.residual = residual
        self.expand = nn.Sequential(nn.Conv2d(in_channels, expanded_channels, 1, bias=False),
                                    nn.BatchNorm2d(expanded_channels))
        self.contract = nn.Sequential(nn.Conv2d(expanded_channels, in_channels, 1, bias=False),
                                      nn.BatchNorm2d(in_channels))
        for conv in (self.expand[0], self.contract[0]):
            nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x):
        expanded = self.expand(x)
        out = self.contract(expanded)
        return expanded, out + x if self.residual else out


def norm_loss(expanded, teacher_map):
    """N * MSE(expanded, the teacher map tiled N times along channels) = the sum over the N channel groups
    of MSE(group, teacher map). A map whose side is an integer multiple of the other's is max-pooled down
    to it (NORM pools the teacher on CIFAR, the student on ImageNet)."""
    with torch.autocast(expanded.device.type, enabled=False):
        s, t = expanded.float(), teacher_map.detach().float()
        (hs, ws), (ht, wt) = s.shape[2:], t.shape[2:]
        if (ht, wt) != (hs, ws):
            if ht >= hs:
                t = F.max_pool2d(t, (ht // hs, wt // ws))
            else:
                s = F.max_pool2d(s, (hs // ht, ws // wt))
        batch, channels, height, width = t.shape
        n = s.shape[1] // channels
        groups = s.reshape(batch, n, channels, height, width)
        return n * (groups - t.unsqueeze(1)).pow(2).mean()


def norm_epoch_weight(epoch, dataset='cifar100'):
    """NORM's multiplier of its loss at a (1-based) epoch: 0.1, 0.5, 1, 0.5, 0.1 with steps at epochs 10, 20,
    180, 210 (ImageNet: 0.1, 0.5, 0.9, 0.5, 0.1 at 5, 15, 60, 80); the code's other data sets are CIFAR."""
    for bound, weight in _EPOCH_STEPS['imagenet' if dataset == 'imagenet' else 'cifar']:
        if epoch < bound:
            return weight
    return 0.1


def norm_logits(logits, ceta):
    """NORM's hidden logit transform: layer norm over the classes (no affine, eps 1e-7) times ``ceta``."""
    return F.layer_norm(logits.float(), logits.shape[-1:], eps=1e-7) * ceta


def fold_norm_checkpoint(model_state, norm_ft):
    """The plain student's state_dict with the FT of a checkpoint's ``norm_ft`` entry folded into its
    classifier: in eval mode FT(x) = A x + c per pixel, which commutes with the average pooling, so
    fc(pool(FT(x))) = (W A) pool(x) + (W c + b). Computed in float64."""
    state = norm_ft['state_dict']
    ft = NORMFeatureTransform(state['expand.0.weight'].shape[1], state['expand.0.weight'].shape[0],
                              norm_ft['residual'])
    ft.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
    ft.double().eval()
    width = ft.expand[0].in_channels
    with torch.no_grad():
        probes = torch.cat([torch.zeros(1, width), torch.eye(width)]).double()[:, :, None, None]
        _, images = ft(probes)
    offset = images[0, :, 0, 0]
    matrix = (images[1:, :, 0, 0] - offset).T  # column i is FT(e_i) - FT(0)
    weight_key, bias_key = norm_ft['classifier'] + '.weight', norm_ft['classifier'] + '.bias'
    weight, bias = model_state[weight_key], model_state[bias_key]
    folded = dict(model_state)
    folded[weight_key] = (weight.double().cpu() @ matrix).to(weight)
    folded[bias_key] = (bias.double().cpu() + weight.double().cpu() @ offset).to(bias)
    return folded


@register_deploy('norm')
def build_folded_student(meta):
    """A NORM student with its FT folded in is the plain student architecture."""
    return build_model(meta['model'], meta['num_classes'], meta['dataset'])


@register('norm', 'NORM')
class NORM(Distiller):
    """NORM (``-a 0``; with ``-a > 0`` it is NORM+KD). The FT is this module's (trained with the student,
    saved as ``norm_ft`` beside ``model``, which stays the plain student); ``predict`` runs the student
    through it, ``deployable`` folds it into the student's classifier."""
    needs_feats = True
    default_weights = (0.1, 0.0, 1.0)  # the NORM README's example: -r 0.1 -a 0 -b 1.0 -s 8

    @classmethod
    def rewrite_argv(cls, argv):
        rewritten = []
        for word in argv:
            short = word[:2]
            if short in _NORM_FLAGS and not word.startswith('--'):
                value = word[2:].lstrip('=')
                word = f'{_NORM_FLAGS[short]}={value}' if value else _NORM_FLAGS[short]
            rewritten.append(word)
        return rewritten

    @classmethod
    def add_arguments(cls, parser):
        if cls is not NORM:  # norm_kd and norm_crd read the same flags
            return
        group = parser.add_argument_group('NORM (with --distill norm/NORM, norm_kd, norm_crd/NORM_CRD, '
                                          'NORM\'s -c and -s mean --ceta and --co-sponge)')
        group.add_argument('--ceta', type=float, default=2.5,
                           help='scale of the layer-normalised logits, and the CRD weight of norm_crd')
        group.add_argument('--co-sponge', '--co_sponge', dest='co_sponge', type=int, default=8,
                           help='N: the FT expands to N times the teacher\'s channels (1: no FT)')
        group.add_argument('--plain_ft', action='store_true', help='FT without its identity shortcut')
        group.add_argument('--no_logit_norm', action='store_true',
                           help='CE and KD on the raw logits (NORM layer-normalises them)')

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        n = args.co_sponge
        if n < 1:
            raise KDZooError(f"-s/--co-sponge (NORM's N) must be at least 1, got {n}")
        if args.ceta <= 0:
            raise KDZooError(f"-c/--ceta must be positive, got {args.ceta}; NORM's default is 2.5")
        if n == 1 and args.plain_ft:
            raise KDZooError("--plain_ft needs an FT, and -s 1 removes it; pass -s 2 or more")
        self.ceta, self.logit_norm, self.dataset = args.ceta, not args.no_logit_norm, args.dataset
        self.model_s = args.model_s
        object.__setattr__(self, '_student', student)  # the objective's model: not a submodule of this
        self._captured = None
        source = _POOLED_MAP_SOURCES.get(type(student))
        self._hooked, self._relu_after_source = source is not None, False
        if source is not None:
            module, self._relu_after_source = source(student)

            def capture(module, inputs, output):
                self._captured = output
            module.register_forward_hook(capture)
        student_map = self._find_pooled_map(student, args.dataset)
        teacher_map = probe_t.feats[-2]
        if teacher_map.dim() != 4:
            raise KDZooError(f"NORM matches the teacher's last feature map, but {args.model_t}'s is not a map")
        c_s, c_t = student_map.shape[1], teacher_map.shape[1]
        (hs, ws), (ht, wt) = student_map.shape[2:], teacher_map.shape[2:]
        if any(max(a, b) % min(a, b) for a, b in ((hs, ht), (ws, wt))):
            raise KDZooError(f"NORM cannot match {args.model_s}'s {hs}x{ws} feature map to {args.model_t}'s "
                             f"{ht}x{wt} one: the sizes must be equal or integer multiples; pick another pair")
        if n == 1 and c_s != c_t:
            raise KDZooError(f"-s 1 removes the FT, so {args.model_s}'s map ({c_s} channels) is matched to "
                             f"{args.model_t}'s ({c_t}) directly; they differ, so pass -s 2 or more")
        self.ft = NORMFeatureTransform(c_s, n * c_t, residual=not args.plain_ft) if n > 1 else None
        classifier = student.get_classifier()
        self.head_name = next(name for name, child in student.named_children() if classifier in child.modules())
        self.classifier_name = next(name for name, module in student.named_modules() if module is classifier)
        if self.ft is not None:
            extra = sum(p.numel() for p in self.ft.parameters())
            total = sum(p.numel() for p in student.parameters()) + extra
            print(f"NORM: FT {c_s}->{n * c_t}->{c_s} channels, {extra / 1e6:.2f}M parameters (student with FT "
                  f"{total / 1e6:.2f}M); folded into the classifier for deployment")

    def _pooled_map(self, feats):
        """The map the student average-pools into its classifier, from its latest forward pass."""
        if not self._hooked:
            return feats[-2]
        fmap, self._captured = self._captured, None
        return F.relu(fmap) if self._relu_after_source else fmap

    @torch.no_grad()
    def _find_pooled_map(self, student, dataset):
        """One eval-mode forward: the map found must pool to the student's pooled feature."""
        size = 224 if dataset == 'imagenet' else 32
        was_training = student.training
        student.eval()
        feats, _ = student(torch.randn(2, 3, size, size, device=next(student.parameters()).device),
                           is_feat=True)
        student.train(was_training)
        fmap = self._pooled_map(feats)
        if fmap.dim() != 4 or not torch.allclose(fmap.float().mean((2, 3)), feats[-1].float(), rtol=1e-4,
                                                 atol=1e-4):
            raise KDZooError(f"NORM does not know which map {self.model_s} pools into its classifier, so it "
                             f"cannot place its FT; pick another student")
        return fmap

    def _through_ft(self, student, feats, logits):
        """(matched student map, pooled feature, logits) of the student with its FT."""
        fmap = self._pooled_map(feats)
        if self.ft is None:
            return fmap, feats[-1], logits
        expanded, fmap = self.ft(fmap)
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return expanded, pooled, student.get_submodule(self.head_name)(pooled)

    def losses(self, out_s, out_t, batch, epoch):
        return self._losses(out_s, out_t, batch, epoch)[0]

    def _losses(self, out_s, out_t, batch, epoch):
        expanded, pooled, logits = self._through_ft(self._student, out_s.feats, out_s.logits)
        out_s.logits = logits  # DistillObjective.step reads it after this call, for the training accuracy
        logits_s, logits_t = logits, out_t.logits
        if self.logit_norm:
            logits_s, logits_t = norm_logits(logits_s, self.ceta), norm_logits(logits_t, self.ceta)
        terms = {'ce': self.gamma * F.cross_entropy(logits_s, batch.targets)}
        if self.alpha:
            terms['kd'] = self.alpha * kd_loss(logits_s, logits_t, self.kd_T)
        if self.beta:
            weight = norm_epoch_weight(epoch, self.dataset) * self.beta
            terms['norm'] = weight * norm_loss(expanded, out_t.feats[-2])
        return terms, pooled

    def predict(self, student, teacher, images):
        feats, logits = student(images, is_feat=True)
        return self._through_ft(student, feats, logits)[2]

    def checkpoint_extras(self):
        if self.ft is None:
            return {}
        return {'norm_ft': {'state_dict': self.ft.state_dict(), 'residual': self.ft.residual,
                            'classifier': self.classifier_name}}

    def deployable(self, student, teacher):
        if self.ft is None:
            return None
        classifier = student.get_classifier()
        # in the student's dtype before loading, or a float64 fold would be rounded through float32
        folded = build_model(self.model_s, classifier.out_features, self.dataset).to(classifier.weight.device,
                                                                                     classifier.weight.dtype)
        folded.load_state_dict(fold_norm_checkpoint(student.state_dict(), self.checkpoint_extras()['norm_ft']))
        trained = sum(p.numel() for p in student.parameters()) + sum(p.numel() for p in self.ft.parameters())
        meta = dict(kind='norm', model=self.model_s, num_classes=classifier.out_features, dataset=self.dataset,
                    num_params_trained=trained, num_params=sum(p.numel() for p in folded.parameters()))
        return folded, meta


@register('norm_kd')
class NORMKD(NORM):
    """NORM + KD: NORM with the KD term on. NORM's scripts only run -a 0 and its README gives no -a for its
    NORM+KD numbers, so the default -a 1 is this toolbox's choice."""
    default_weights = (0.1, 1.0, 1.0)


@register('norm_crd', 'NORM_CRD')
class NORMCRD(NORM):
    """NORM + c * CRD, c = -c/--ceta (NORM's code), on the pooled features (the student's after its FT)."""
    reads_flags = CRD_FLAGS

    @classmethod
    def data_options(cls, args):
        return {'train_sample': ContrastSpec(args.nce_k, args.mode)}

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = crd_criterion(args, probe_s, probe_t, data)

    def losses(self, out_s, out_t, batch, epoch):
        terms, pooled = self._losses(out_s, out_t, batch, epoch)
        terms['crd'] = self.ceta * self.criterion(pooled, out_t.feats[-1], batch.indices, batch.contrast_idx)
        return terms
