"""Self-contained deployed networks: what some methods ship instead of the bare student.

SimKD's student runs through a projector and the teacher's classifier; NORM's folds its feature
transform into the classifier. train_student.py saves such a network as ``<student>_deploy.pth`` =
``{'model': state_dict, 'deploy': meta}``, where ``meta['kind']`` names a builder registered here
and the rest of ``meta`` is what the builder needs. tools/eval.py rebuilds and evaluates it with no
teacher around. Builders that live beside their method (NORM's) are registered by the time this module
can be used: importing ``distiller_zoo.deploy`` runs the package's ``__init__`` first, which imports every
method file.
"""
import copy

import torch
import torch.nn as nn

from models.weights import load_weights
from helper.errors import CheckpointError, KDZooError
from models.registry import build_model, model_name_from_path
from models.util import SimKD

BUILDERS = {}


def register_deploy(kind):
    """Decorator: ``builder(meta) -> nn.Module`` for deployed networks of this kind."""
    def add(builder):
        BUILDERS[kind] = builder
        return builder
    return add


def build_deployed(meta):
    kind = meta.get('kind')
    if kind not in BUILDERS:
        raise CheckpointError(f"this deployed checkpoint is of kind '{kind}', which this version cannot build "
                              f"(known: {', '.join(sorted(BUILDERS)) or 'none'})")
    return BUILDERS[kind](meta)


def load_deployed(checkpoint, path, num_classes):
    """The network of a ``<student>_deploy.pth`` (already read), its weights loaded strictly."""
    meta = checkpoint['deploy']
    if meta['num_classes'] != num_classes:
        raise CheckpointError(f"'{path}' was trained on {meta['num_classes']} classes but the data set has "
                              f"{num_classes}; pass the --dataset it was trained on ({meta['dataset']})")
    model = build_deployed(meta)
    try:
        model.load_state_dict(checkpoint['model'], strict=True)
    except RuntimeError:
        raise CheckpointError(f"'{path}' does not hold the weights its 'deploy' entry describes "
                              f"({meta['kind']}, {meta['model']}); it is damaged or was edited") from None
    return model


# ---- SimKD ------------------------------------------------------------------------------------------------
class SimKDNetwork(nn.Module):
    """SimKD as deployed: the student's last feature map -> projector (``proj``, the SimKD repo's ``SimKD``
    module) -> average pool -> the teacher's classifier (``classifier``, a copy). The student's own
    classifier is never trained by SimKD and is left out (an identity in its place). ``pool_to`` is the
    teacher map's (H, W) when it was smaller than the student's, else None (see ``SimKD.predict``)."""

    def __init__(self, student, proj, classifier, pool_to=None):
        super().__init__()
        self.student = student
        self.proj = proj
        self.classifier = classifier
        self.pool_to = None if pool_to is None else tuple(pool_to)

    @classmethod
    def assemble(cls, student, proj, classifier, pool_to):
        """A deployable copy of trained parts (the originals are left as they are)."""
        return cls(_without_classifier(copy.deepcopy(student)), copy.deepcopy(proj), copy.deepcopy(classifier),
                   pool_to)

    def forward(self, x):
        feats, _ = self.student(x, is_feat=True)
        return self.proj.predict(feats[-2], self.classifier, self.pool_to)


def simkd_pool_to(feat_s, feat_t):
    """The size the student's last map is pooled to before the projector (the teacher's, when smaller)."""
    return tuple(feat_t.shape[2:]) if feat_s.shape[2] > feat_t.shape[2] else None


def _without_classifier(model):
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            parent, _, child = name.rpartition('.')
            setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
            return model
    raise ValueError(f"{type(model).__name__}.get_classifier() is not one of its submodules")


@register_deploy('simkd')
def build_simkd_network(meta):
    """Meta: model, num_classes, dataset (the student), s_n, t_n, factor (the projector), pool_to."""
    student = _without_classifier(build_model(meta['model'], meta['num_classes'], meta['dataset']))
    proj = SimKD(s_n=meta['s_n'], t_n=meta['t_n'], factor=meta['factor'])
    return SimKDNetwork(student, proj, nn.Linear(meta['t_n'], meta['num_classes']), meta['pool_to'])


def require_simkd_teacher(path, path_t):
    """A SimKD student checkpoint cannot predict without its teacher's classifier."""
    if path_t is None:
        raise KDZooError(f"'{path}' is a SimKD student: it predicts through its projector ('proj') and its "
                         f"teacher's classifier; pass --path_t <teacher checkpoint>, or evaluate the run's "
                         f"<student>_deploy.pth instead")


def simkd_from_checkpoint(student, proj_state, path, path_t, model_t, dataset):
    """A SimKD student checkpoint (``model`` + ``proj``, the SimKD repo's or ours) made whole with the classifier
    of its teacher (``path_t``), to predict as the SimKD repo's validate_distill does. ``student`` holds ``model``."""
    model_t = model_t or model_name_from_path(path_t)
    if model_t is None:
        raise KDZooError(f"cannot tell the teacher's architecture from '{path_t}'; pass --model_t")
    num_classes = student.get_classifier().out_features
    teacher = build_model(model_t, num_classes, dataset, '--model_t')
    load_weights(teacher, path_t, model_t, flag='--path_t')
    try:
        mid, s_n = proj_state['transfer.0.weight'].shape[:2]
        t_n = proj_state['transfer.6.weight'].shape[0]
        proj = SimKD(s_n=s_n, t_n=t_n, factor=t_n // mid)
        proj.load_state_dict(proj_state, strict=True)
    except (KeyError, AttributeError, ValueError, RuntimeError, KDZooError):
        raise CheckpointError(f"the 'proj' entry of '{path}' is not a SimKD projector") from None
    size = 224 if dataset == 'imagenet' else 32
    student.eval()
    teacher.eval()
    with torch.no_grad():
        images = torch.zeros(1, 3, size, size)
        feat_s, feat_t = student(images, is_feat=True)[0][-2], teacher(images, is_feat=True)[0][-2]
    if feat_s.shape[1] != s_n or feat_t.shape[1] != t_n:
        raise CheckpointError(f"the projector in '{path}' maps {s_n} to {t_n} channels, but {model_t}'s last map "
                              f"has {feat_t.shape[1]} and the student's {feat_s.shape[1]}; is --path_t its teacher?")
    return SimKDNetwork(_without_classifier(student), proj, teacher.get_classifier(), simkd_pool_to(feat_s, feat_t))
