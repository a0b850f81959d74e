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
    (its epoch 0: w = 0.1, initial lr) is not run. The multiplier's steps are pinned to NORM's recipe
    (240 epochs; ImageNet 100): a run of other --epochs gets them scaled (helper/recipe.py), e.g.
    1, 1, 9, 11 in 12 epochs; ``--no_recipe_scaling`` keeps them.
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

from helper.errors import KDZooError
from .deploy import register_deploy
from helper.recipe import pin, scheduled
from models.features import run_network
from models.registry import build_model
from .CRD import ContrastiveTerm
from .base import Distiller
from .registry import register
from .teacher import TeacherRequest

__all__ = ['NORMFeatureTransform', 'norm_loss', 'norm_epoch_steps', 'norm_epoch_weight', 'norm_logits',
           'fold_norm_checkpoint', 'NORM', 'NORMKD', 'NORMCRD']

# NORM's multiplier of its loss: (first epoch that is past the step, weight); 0.1 after the last step.
_EPOCH_STEPS = {'cifar': ((10, 0.1), (20, 0.5), (180, 1.0), (210, 0.5)),
                'imagenet': ((5, 0.1), (15, 0.5), (60, 0.9), (80, 0.5))}

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


def norm_epoch_steps(dataset='cifar100'):
    """The epochs of NORM's multiplier steps in its own recipe: 10, 20, 180, 210 (ImageNet 5, 15, 60, 80)."""
    return tuple(bound for bound, _ in _EPOCH_STEPS['imagenet' if dataset == 'imagenet' else 'cifar'])


def norm_epoch_weight(epoch, dataset='cifar100', steps=None):
    """NORM's multiplier of its loss at a (1-based) epoch: 0.1, 0.5, 1, 0.5, 0.1 with steps at epochs 10, 20,
    180, 210 (ImageNet: 0.1, 0.5, 0.9, 0.5, 0.1 at 5, 15, 60, 80); the code's other data sets are CIFAR.
    ``steps``: the four step epochs of a run of another length (``norm_epoch_steps`` scaled)."""
    table = _EPOCH_STEPS['imagenet' if dataset == 'imagenet' else 'cifar']
    for bound, (_, weight) in zip(steps or [b for b, _ in table], table):
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
    needs_pooled_map = True  # the FT sits on the map the student pools: forward_features(x)
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
        group = parser.add_argument_group('NORM (with --distill norm/NORM, norm_kd, norm_crd/NORM_CRD, '
                                          'NORM\'s -c and -s mean --ceta and --co-sponge)')
        group.add_argument('--ceta', type=float, default=2.5,
                           help='scale of the layer-normalised logits, and the CRD weight of norm_crd')
        group.add_argument('--co-sponge', '--co_sponge', dest='co_sponge', type=int, default=8,
                           help='N: the FT expands to N times the teacher\'s channels (1: no FT)')
        group.add_argument('--plain_ft', action='store_true', help='FT without its identity shortcut')
        group.add_argument('--no_logit_norm', action='store_true',
                           help='CE and KD on the raw logits (NORM layer-normalises them)')

    @staticmethod
    def settings(args):
        """NORM's multiplier steps are pinned to its 240-epoch (ImageNet: 100) recipe: scaled in other runs."""
        pin(args, 'norm_steps', norm_epoch_steps(getattr(args, 'dataset', 'cifar100')))

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
        self.steps = scheduled(args, 'norm_steps', norm_epoch_steps(args.dataset))
        self.model_s = args.model_s
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
        self.classifier_name = next(name for name, module in student.named_modules() if module is classifier)
        if self.ft is not None:
            extra = sum(p.numel() for p in self.ft.parameters())
            total = sum(p.numel() for p in student.parameters()) + extra
            print(f"NORM: FT {c_s}->{n * c_t}->{c_s} channels, {extra / 1e6:.2f}M parameters (student with FT "
                  f"{total / 1e6:.2f}M); folded into the classifier for deployment")

    @torch.no_grad()
    def _find_pooled_map(self, student, dataset):
        """The map the student average-pools into its classifier, from one eval-mode pass of the feature API."""
        if not callable(getattr(student, 'forward_features', None)):
            raise KDZooError(f"NORM places its FT on the map {self.model_s} pools into its classifier, but "
                             f"{self.model_s} has no forward_features to give it; pick a zoo student")
        size = 224 if dataset == 'imagenet' else 32
        was_training = student.training
        student.eval()
        fmap = student.forward_features(torch.randn(2, 3, size, size, device=next(student.parameters()).device))
        student.train(was_training)
        return fmap

    def _through_ft(self, student, out):
        """(matched student map, pooled feature, logits) of the student with its FT, from a ``run_network``
        output that holds the pooled map."""
        if self.ft is None:
            return out.pooled_map, out.feats[-1], out.logits
        expanded, fmap = self.ft(out.pooled_map)
        pooled = student.forward_head(fmap, pre_logits=True)
        return expanded, pooled, student.classify(pooled)

    def teacher_request(self):
        """NORM's CE-only "student with one FT" rows (-a 0 -b 0) never read the teacher: no teacher pass."""
        return TeacherRequest(self.needs_feats, needed=self.reads_teacher())

    def reads_teacher(self):
        return bool(self.alpha or self.beta)

    def forward_train(self, student, batch, out_t, epoch):
        """The student with its FT: CE and KD on its (layer-normalised) logits, NORM's loss on the
        expanded map; those logits are the ones trained on."""
        out_s = self.run_student(student, batch)
        expanded, pooled, logits = self._through_ft(student, out_s)
        return logits, self.terms(logits, expanded, pooled, out_t, batch, epoch)

    def terms(self, logits, expanded, pooled, out_t, batch, epoch):
        logits_s = norm_logits(logits, self.ceta) if self.logit_norm else logits
        logits_t = None
        if self.alpha:
            logits_t = norm_logits(out_t.logits, self.ceta) if self.logit_norm else out_t.logits
        terms = self.ce_kd_terms(logits_s, logits_t, batch.targets, batch, epoch)
        if self.beta:
            weight = norm_epoch_weight(epoch, self.dataset, self.steps) * self.beta
            terms['norm'] = weight * norm_loss(expanded, out_t.feats[-2])
        return terms

    def predict(self, student, teacher, images):
        return self._through_ft(student, run_network(student, images, True, False, True))[2]

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
class NORMCRD(ContrastiveTerm, NORM):
    """NORM + c * CRD, c = -c/--ceta (NORM's code), on the pooled features (the student's after its FT)."""

    def reads_teacher(self):
        return True  # the CRD term reads the teacher's features whatever -a and -b are

    def terms(self, logits, expanded, pooled, out_t, batch, epoch):
        terms = super().terms(logits, expanded, pooled, out_t, batch, epoch)
        terms['crd'] = self.ceta * self.criterion(pooled, out_t.feats[-1], batch.indices, batch.contrast_idx)
        return terms
