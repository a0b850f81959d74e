"""The interface every distillation method implements, and the registry of ``--distill`` names.

A method is one ``Distiller`` subclass in its own file, registered with ``@register('name')``. The
contract, as mdistiller's ``forward_train``:

1. The method declares what it reads. ``needs_feats``/``preact`` for the student, ``teacher_request()``
   for the teacher (features, pre-ReLU maps, extra views of the batch such as NTCE-KD's 'strong'), and
   ``data_options`` for the loaders (CRD's contrast rows, the strong view, drop_last); every loader
   honours them or refuses in one line.
2. The engine computes the teacher's outputs for a batch once, under ``no_grad`` (``run_teacher``), and
   hands them to ``forward_train(student, batch, out_t, epoch)``, which runs the student and returns
   ``(logits, losses)``: the logits the method trained on (for the training accuracy) and its named,
   already-weighted loss terms, whose sum is minimised. Nothing else is touched: a method never patches
   the networks, the batch or the engine's state, so one teacher pass can serve several methods.
3. Settings are settled once, by ``defaults_for`` right after parsing (the method's own flags filled
   and checked, written back into ``args``); constructors only read them.

The default ``forward_train`` runs the student once and calls ``losses``, RepDistiller's composition
gamma * CE + alpha * KD + beta * method loss (``-r/-c``, ``-a/-d``, ``-b``), where a method only writes
``method_loss``. Methods with their own weighting (DKD's warm-up, for one) override ``losses``; methods
whose trained logits are not the student's own (SimKD, NORM) or that read other views (NTCE-KD)
override ``forward_train``. A new method is one new file; train_student.py holds no per-method code.
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.registry import Registry
from models.features import NetOutput, run_network

# mdistiller's names (its configs' DISTILLER.TYPE) for methods RepDistiller, and so kdzoo, names otherwise.
MDISTILLER_NAMES = {'fitnet': 'hint', 'at': 'attention', 'sp': 'similarity'}
DISTILLERS = Registry('--distill', aliases=MDISTILLER_NAMES)
register = DISTILLERS.register


def method_name(name, flag='--distill'):
    """The registered name for ``name`` in any case (mdistiller's configs spell them 'KD', 'DKD', 'REVIEWKD',
    NTCE-KD's 'NTCE'), or one line suggesting the closest names."""
    return DISTILLERS.lookup(name, flag)


class Distiller(nn.Module):
    """One KD method: its extra modules and the loss terms it adds to the student's training.

    Class attributes say what the method reads and how it is run:
      needs_feats      run both networks with ``is_feat=True``
      preact           ask the student for pre-ReLU stage outputs (AB, OFD); the teacher too unless
                       ``teacher_preact`` says otherwise
      needs_pooled_map run the student through ``forward_features`` so that ``out_s.pooled_map`` holds the
                       map it average-pools into its classifier (NORM)
      views            extra views of each batch whose teacher outputs the method reads ('strong')
      default_weights  (gamma, alpha, beta) used when -r/-a/-b are not given: the weights of the
                       script that produced the method's published numbers
    The constructor receives the arguments, both networks, one dummy forward of each (``NetOutput``
    in eval mode, for the feature shapes, as RepDistiller builds its modules) and the DataBundle.
    """
    name = None
    needs_feats = False
    preact = False
    teacher_preact = None  # None: as ``preact``
    needs_pooled_map = False
    views = ()
    default_weights = (1.0, 0.0, 0.0)
    warmup = 0  # epochs over which the method's term is ramped in (DKD, ReviewKD, MKL set it)
    # Flags the method reads that neither its add_arguments nor its bases' add (--kd_T, --init_epochs, another
    # method's flags such as CRD's for CC and NORM+CRD); collected over the bases too (``flag_dests``).
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
        """Flags of this method's own (e.g. DKD's --dkd_alpha), added to train_student.py's parser by
        ``add_method_arguments``, which asks each class defining this method once (subclasses share it).
        Every method's flags are on the parser, so a flag name must not clash with another method's."""

    @classmethod
    def flag_dests(cls, parser):
        """Destinations of every flag this method reads, in the parser's order: those that the add_arguments
        of this class and of its bases put on ``parser`` (through ``add_method_arguments``), and their
        ``reads_flags``. Run folder names and the recorded settings ask this, so a flag keeps counting when
        it moves from train_student.py into the method's add_arguments."""
        added = getattr(parser, 'flags_added_by', {})
        dests = set()
        for klass in cls.__mro__:
            dests.update(added.get(klass, ()))
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
        """Options for build_data: the data this method needs beyond plain batches (CRD's contrast
        sampling, SemCKD's drop_last); the views in ``views`` are added here for every method."""
        return {'strong_view': True} if 'strong' in cls.views else {}

    def teacher_request(self):
        """What the teacher must compute for each batch (see ``run_teacher``)."""
        preact = self.preact if self.teacher_preact is None else self.teacher_preact
        return TeacherRequest(self.needs_feats, preact, tuple(self.views))

    def trainable_modules(self):
        """Modules the main optimiser trains besides the student (projectors, embeddings...): the method, or
        with ``init_stage_only`` its other children, those of them that have trainable parameters."""
        modules = [m for name, m in self.named_children() if name not in self.init_stage_only] \
            if self.init_stage_only else [self]
        return [m for m in modules if any(p.requires_grad for p in m.parameters())]

    def train(self, mode=True):
        super().train(mode)
        for name in self.init_stage_only:
            getattr(self, name).eval()  # InitStageObjective switches it on in its own stage
        return self

    def run_student(self, student, batch):
        """The student's outputs on the batch's training view, as this method reads them."""
        return run_network(student, batch.images, self.needs_feats, self.preact, self.needs_pooled_map)

    def forward_train(self, student, batch, out_t, epoch):
        """One training step's ``(logits, losses)``: the logits the method trained on, for the training
        accuracy, and its named, already-weighted loss terms (their sum is minimised). ``out_t`` is the
        teacher's output for the batch, computed once by the engine as ``teacher_request`` asked."""
        out_s = self.run_student(student, batch)
        return out_s.logits, self.losses(out_s, out_t, batch, epoch)

    def method_loss(self, out_s, out_t, batch, epoch):
        """The method's own loss (the beta term), before weighting."""
        raise NotImplementedError

    def ramp(self, epoch):
        """Linear warm-up of the method's term, min(epoch / warmup, 1) of the 1-based epoch, as mdistiller
        ramps DKD, ReviewKD and MKL in; 1 for methods without ``self.warmup`` (or a warm-up of 0)."""
        return min(epoch / self.warmup, 1.0) if self.warmup else 1.0

    def ce_kd_terms(self, logits_s, logits_t, targets):
        """The label and logit terms every composition starts from: gamma * CE, and alpha * KD when weighted."""
        terms = {'ce': self.gamma * F.cross_entropy(logits_s, targets)}
        if self.alpha:
            terms['kd'] = self.alpha * kd_loss(logits_s, logits_t, self.kd_T)
        return terms

    def losses(self, out_s, out_t, batch, epoch):
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets)
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
        ``distiller_zoo.deploy`` to rebuild it; None when the student alone is the deployed network."""
        return None

    # Two-stage methods (AB, FT, FSP, SSKD) train some modules first for --init_epochs with init_loss.
    init_epochs = 30  # the default of --init_epochs (RepDistiller's; SSKD's teacher stage is 60)
    # Names of the modules trained only in that stage (AB's connector, FT's paraphraser, SSKD's teacher head):
    # the main stage keeps them in eval mode and out of its optimiser.
    init_stage_only = ()

    def init_modules(self, student):
        return []

    def init_learning_rate(self, args):
        """Constant lr of the init stage (RepDistiller's helper/pretrain.py uses --learning_rate)."""
        return args.learning_rate

    def init_lr_at(self, args, epoch):
        """The init stage's lr at a (1-based) epoch of it: constant unless a method schedules it (SSKD)."""
        return self.init_learning_rate(args)

    def init_teacher_request(self):
        """What the teacher computes for a batch of the init stage (its features)."""
        return TeacherRequest(True, self.teacher_request().preact)

    def forward_init(self, student, batch, out_t):
        """One init-stage step's ``(logits, loss)``, as ``forward_train`` for the main stage: by default the
        student's features and ``init_loss``; SSKD's stage trains a teacher-side head and runs no student."""
        out_s = run_network(student, batch.images, True, self.preact)
        return out_s.logits, self.init_loss(out_s, out_t, batch)

    def init_loss(self, out_s, out_t, batch):
        raise NotImplementedError


def add_loss_weights(group):
    """The flags every method reads: -r/-a/-b, --kd_T and --init_epochs."""
    group.add_argument('-r', '--gamma', '-c', '--cls', dest='gamma', type=float, default=None,
                       help='weight of the cross-entropy on labels')
    group.add_argument('-a', '--alpha', '-d', '--div', dest='alpha', type=float, default=None,
                       help='weight of the KD (KL) term')
    group.add_argument('-b', '--beta', type=float, default=None, help="weight of the method's own loss")
    group.add_argument('--kd_T', type=float, default=4, help='KD temperature')
    group.add_argument('--init_epochs', type=int, default=None,
                       help='init stage of AB, FT, FSP (30) and SSKD (its teacher head, 60)')


def add_ramp_arguments(group, method, term, temperature=True):
    """``--<method>_T`` and ``--<method>_warmup`` of a logit method that mdistiller ramps in (DKD, MKL; ReviewKD
    has only the warm-up; ``term`` names its loss in the help), left None for ``settle_ramp`` to fill."""
    if temperature:
        group.add_argument(f'--{method}_T', type=float, default=None, help=f'{term} temperature (4; ImageNet 1)')
    group.add_argument(f'--{method}_warmup', type=int, default=None,
                       help=f'epochs of linear {term} warm-up, min(epoch / warmup, 1) (20; ImageNet 1)')


def settle_ramp(args, method, temperature=True):
    """Fill ``--<method>_T`` (4; ImageNet 1) and ``--<method>_warmup`` (20; ImageNet 1), mdistiller's values, when
    not given, and refuse a temperature that is not positive or a negative warm-up."""
    imagenet = args.dataset == 'imagenet'
    defaults = {f'{method}_warmup': 1 if imagenet else 20}
    if temperature:
        defaults[f'{method}_T'] = 1.0 if imagenet else 4.0
    for dest, default in defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if temperature and getattr(args, f'{method}_T') <= 0:
        raise KDZooError(f"--{method}_T must be positive, got {getattr(args, f'{method}_T'):g}")
    if getattr(args, f'{method}_warmup') < 0:
        raise KDZooError(f"--{method}_warmup cannot be negative, got {getattr(args, f'{method}_warmup')}")


def add_method_arguments(parser, methods=None):
    """Every method's own flags on ``parser`` (of ``methods``, default every registered one): each class that
    defines ``add_arguments`` itself is asked once, so subclasses (norm_kd, the ++ variants) share their
    base's flags without guards."""
    owners = dict.fromkeys(klass for cls in (methods or DISTILLERS).values() for klass in cls.__mro__
                           if 'add_arguments' in vars(klass) and klass is not Distiller)
    # Which class added which destinations, for ``Distiller.flag_dests`` (run folder names, the report).
    parser.flags_added_by = getattr(parser, 'flags_added_by', {})
    for klass in owners:
        before = set(map(id, parser._actions))
        klass.add_arguments(parser)
        parser.flags_added_by[klass] = [action.dest for action in parser._actions if id(action) not in before]
    return parser


def settle(method, args):
    """Settle a parsed command once, before anything is built: the method's own flags (``defaults_for``),
    then -r/-a/-b not given from its defaults; impossible values are refused in one line. Returns the
    sentence that says which weights are used."""
    defaults = dict(zip(('gamma', 'alpha', 'beta'), method.defaults_for(args)))
    taken = [key for key in defaults if getattr(args, key) is None]
    for key in taken:
        setattr(args, key, defaults[key])
    for key, flag in (('gamma', '-r/-c'), ('alpha', '-a/-d'), ('beta', '-b')):
        if getattr(args, key) < 0:
            raise KDZooError(f"the loss weight {flag} cannot be negative, got {getattr(args, key)}")
    if args.init_epochs is None:
        args.init_epochs = method.init_epochs
    if args.init_epochs < 0:
        raise KDZooError(f"--init_epochs cannot be negative, got {args.init_epochs}")
    if args.kd_T <= 0:
        raise KDZooError(f"--kd_T must be positive, got {args.kd_T}")
    note = f"weights: CE {args.gamma:g}, KD {args.alpha:g}, {method.name} {args.beta:g}"
    if taken:
        note += f" ({', '.join(taken)} from the {method.name} defaults)"
    return note


@dataclass(frozen=True)
class TeacherRequest:
    """What the teacher computes for a batch: its output on ``view`` (None: the batch's training images;
    'rotations': SSKD's four rotated views), with features (pre-ReLU ones with ``preact``), and its logits
    on the extra ``views``; nothing at all when not ``needed`` (a step whose terms never read the teacher)."""
    feats: bool = False
    preact: bool = False
    views: tuple = ()
    view: Optional[str] = None
    needed: bool = True


@torch.no_grad()
def run_teacher(teacher, batch, request):
    """The teacher's ``NetOutput`` for ``batch`` as ``request`` asks, computed without autograd (None when
    the request says the teacher is not needed)."""
    if not request.needed:
        return None
    images = batch.images if request.view is None else batch.view(request.view)
    out_t = run_network(teacher, images, request.feats, request.preact)
    for view in request.views:
        out_t.views[view] = NetOutput(teacher(batch.view(view)))
    return out_t


@torch.no_grad()
def probe_networks(student, teacher, preact, size, memory_format=torch.contiguous_format):
    """One eval-mode forward of both networks on two random ``size`` x ``size`` images: the feature shapes
    a method builds its modules for (as RepDistiller does); the student's mode is restored."""
    images = torch.randn(2, 3, size, size, device=next(student.parameters()).device)
    images = images.contiguous(memory_format=memory_format)
    was_training = student.training
    student.eval()
    try:
        return run_network(student, images, True, preact), run_network(teacher, images, True, preact)
    finally:
        student.train(was_training)


class Borrowed:
    """A module a method uses but does not own (the teacher's classifier): held by reference, so it is no
    submodule of the method, never trained, saved, moved or counted with it. Call it as the module."""
    __slots__ = ('module',)

    def __init__(self, module):
        self.module = module

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


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
