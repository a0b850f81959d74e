"""The interface every distillation method implements, and the registry of ``--distill`` names.

A method is one ``Distiller`` subclass in its own file, registered with ``@register('name')``. The
shared training loop never looks inside it: ``DistillObjective`` runs both networks (the teacher
under ``no_grad``), hands their outputs to ``Distiller.losses`` and optimises the sum of the named,
weighted terms it returns. A new method is one new file; train_student.py holds no per-method code.

The default ``losses`` is RepDistiller's composition, gamma * CE + alpha * KD + beta * method loss
(``-r/-c``, ``-a/-d``, ``-b``), where a method only writes ``method_loss``. Methods with their own
weighting (DKD's warm-up, for one) override ``losses``.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError

DISTILLERS = {}


def register(*names):
    """Class decorator: make a Distiller selectable as ``--distill <name>`` (first name is canonical)."""
    def add(cls):
        for name in names:
            if name in DISTILLERS:
                raise ValueError(f"--distill name '{name}' registered twice")
            DISTILLERS[name] = cls
        cls.name = names[0]
        return cls
    return add


@dataclass
class NetOutput:
    """What one network produced for a batch."""
    logits: torch.Tensor
    feats: Optional[List[torch.Tensor]] = None  # [f0, ..., fK, pooled]; pre-ReLU maps if preact


def run_network(net, images, needs_feats, preact):
    if needs_feats:
        feats, logits = net(images, is_feat=True, preact=preact)
        return NetOutput(logits, feats)
    return NetOutput(net(images))


class Distiller(nn.Module):
    """One KD method: its extra modules and the loss terms it adds to the student's training.

    Class attributes say what the method reads and how it is run:
      needs_feats      run both networks with ``is_feat=True``
      preact           ask for pre-ReLU stage outputs (AB, OFD)
      default_weights  (gamma, alpha, beta) used when -r/-a/-b are not given: the weights of the
                       script that produced the method's published numbers
    The constructor receives the arguments, both networks, one dummy forward of each (``NetOutput``
    in eval mode, for the feature shapes, as RepDistiller builds its modules) and the DataBundle.
    """
    name = None
    needs_feats = False
    preact = False
    default_weights = (1.0, 0.0, 0.0)
    warmup = 0  # epochs over which the method's term is ramped in (DKD, ReviewKD, MKL set it)
    # Flags the method reads that its add_arguments does not add (train_student.py's -f, -s, --hint_layer,
    # the CRD group); collected over the class's bases like the flags add_arguments adds (``flag_dests``).
    reads_flags = ('kd_T',)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__()
        self.gamma, self.alpha, self.beta = args.gamma, args.alpha, args.beta
        self.kd_T = args.kd_T

    @classmethod
    def rewrite_argv(cls, argv):
        """Translate flags this method's own repo spells differently before parsing (NORM's -c/-s mean
        --ceta/--co-sponge there, --cls/--soft in the SimKD repo). Called only for the chosen method."""
        return argv

    @classmethod
    def add_arguments(cls, parser):
        """Flags of this method's own (e.g. DKD's --dkd_alpha), added to train_student.py's parser.
        Every registered method is asked, so a flag name must not clash with another method's."""

    @classmethod
    def flag_dests(cls, parser):
        """Destinations of every flag this method reads, in the parser's order: those that the add_arguments
        of this class and of its bases put on ``parser`` (through ``add_method_arguments``), and their
        ``reads_flags``. Run folder names and the recorded settings ask this, so a flag keeps counting when
        it moves from train_student.py into the method's add_arguments."""
        added = getattr(parser, 'flags_added_by', {})
        dests = set()
        for klass in cls.__mro__:
            hook = klass.__dict__.get('add_arguments')
            if hook is not None:
                dests.update(added.get(hook.__func__, ()))
            dests.update(klass.__dict__.get('reads_flags', ()))
        return [action.dest for action in parser._actions if action.dest in dests]

    @classmethod
    def defaults_for(cls, args):
        """(gamma, alpha, beta) for -r/-a/-b not given; may depend on the pair (DKD's per-pair beta).
        Also settles the method's own flags (``settings``) before anything is built."""
        cls.settings(args)
        return cls.default_weights

    @staticmethod
    def settings(args):
        """Fill this method's own flags that were not given (they may depend on the pair or the data set)
        and refuse impossible values, writing them back into ``args``."""

    @classmethod
    def data_options(cls, args):
        """Extra options for build_data (CRD's contrast sampling, SemCKD's drop_last)."""
        return {}

    def trainable_modules(self):
        """Modules the main optimiser trains besides the student (projectors, embeddings...)."""
        return [self] if any(p.requires_grad for p in self.parameters()) else []

    def method_loss(self, out_s, out_t, batch, epoch):
        """The method's own loss (the beta term), before weighting."""
        raise NotImplementedError

    def ramp(self, epoch):
        """Linear warm-up of the method's term, min(epoch / warmup, 1) of the 1-based epoch, as mdistiller
        ramps DKD, ReviewKD and MKL in; 1 for methods without ``self.warmup`` (or a warm-up of 0)."""
        return min(epoch / self.warmup, 1.0) if self.warmup else 1.0

    def losses(self, out_s, out_t, batch, epoch):
        terms = {'ce': self.gamma * F.cross_entropy(out_s.logits, batch.targets)}
        if self.alpha:
            terms['kd'] = self.alpha * kd_loss(out_s.logits, out_t.logits, self.kd_T)
        if self.beta:
            terms[self.name] = self.beta * self.ramp(epoch) * self.method_loss(out_s, out_t, batch, epoch)
        return terms

    def predict(self, student, teacher, images):
        """Logits of the student as deployed; SimKD, for one, routes through the teacher's classifier."""
        return student(images)

    def checkpoint_extras(self):
        """Entries saved beside ``model`` in every checkpoint (SimKD's ``proj``)."""
        return {}

    def deployable(self, student, teacher):
        """The network to ship when it is more than the bare student (SimKD: student, projector and the
        teacher's classifier in one module), as ``(module, meta)`` with ``meta`` enough for
        ``models.deploy`` to rebuild it; None when the student alone is the deployed network."""
        return None

    # Two-stage methods (AB, FT, FSP) train some modules first for --init_epochs with init_loss.
    def init_modules(self, student):
        return []

    def init_learning_rate(self, args):
        """Constant lr of the init stage (RepDistiller's helper/pretrain.py uses --learning_rate)."""
        return args.learning_rate

    def init_loss(self, out_s, out_t, batch):
        raise NotImplementedError


def add_method_arguments(parser, methods=None):
    """Ask every method (each class once, aliases or not) for its flags, remembering which add_arguments
    function added which destinations: a method whose add_arguments adds nothing for it (the '++' methods,
    norm_kd: one class adds the flags they share) still finds them through its bases (``flag_dests``)."""
    added = getattr(parser, 'flags_added_by', {})
    for method_cls in dict.fromkeys((methods or DISTILLERS).values()):
        before = set(map(id, parser._actions))
        method_cls.add_arguments(parser)
        new = [action.dest for action in parser._actions if id(action) not in before]
        added.setdefault(method_cls.add_arguments.__func__, []).extend(new)
    parser.flags_added_by = added
    return parser


def kd_loss(logits_s, logits_t, temperature):
    """Hinton's KD: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch."""
    log_p_s = F.log_softmax(logits_s.float() / temperature, dim=1)
    log_p_t = F.log_softmax(logits_t.float() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True) * temperature ** 2


def check_layer(index, feats, flag, network):
    """One clear error when a feature index does not exist in a network's feature list."""
    if not -len(feats) <= index < len(feats):
        raise KDZooError(f"{flag} {index} is out of range for the {network}, which has {len(feats)} "
                         f"feature maps (0..{len(feats) - 1})")
