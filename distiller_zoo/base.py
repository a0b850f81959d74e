"""The interface every distillation method implements, as mdistiller's ``forward_train``.

A method is one ``Distiller`` subclass in its own file, registered with ``@register('name')``
(``distiller_zoo/registry.py``). The contract:

1. The method declares what it reads. ``needs_feats``/``preact`` for the student, ``teacher_request()``
   for the teacher (features, pre-ReLU maps, extra views of the batch such as NTCE-KD's 'strong'), and
   ``data_options`` for the loaders (CRD's contrast rows, the strong view, drop_last); every loader
   honours them or refuses in one line.
2. The engine computes the teacher's outputs for a batch once, under ``no_grad`` (``run_teacher``,
   ``distiller_zoo/teacher.py``), and hands them to ``forward_train(student, batch, out_t, epoch)``, which
   runs the student and returns ``(logits, losses)``: the logits the method trained on (for the training
   accuracy) and its named, already-weighted loss terms, whose sum is minimised. Nothing else is touched: a
   method never patches the networks, the batch or the engine's state, so one teacher pass can serve
   several methods.
3. Settings are settled once, by ``defaults_for`` right after parsing (the method's own flags filled
   and checked, written back into ``args``); constructors only read them. The flag side of the contract is
   ``MethodFlags`` (``distiller_zoo/flags.py``), which a Distiller is.

The default ``forward_train`` runs the student once and calls ``losses``, RepDistiller's composition
gamma * CE + alpha * KD + beta * method loss (``-r/-c``, ``-a/-d``, ``-b``), where a method only writes
``method_loss``. Methods with their own weighting (DKD's warm-up, for one) override ``losses``; methods
whose trained logits are not the student's own (SimKD, NORM) or that read other views (NTCE-KD)
override ``forward_train``. Methods that first train some modules alone take ``TwoStage``
(``distiller_zoo/two_stage.py``). A new method is one new file; train_student.py holds no per-method code.
"""
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from models.features import NetOutput, run_network
from .flags import MethodFlags
from .teacher import TeacherRequest


class Distiller(MethodFlags, nn.Module):
    """One KD method: its extra modules and the loss terms it adds to the student's training.

    Class attributes say what the method reads and how it is run:
      needs_feats      run both networks with ``is_feat=True``
      preact           ask the student for pre-ReLU stage outputs (AB, OFD); the teacher too unless
                       ``teacher_preact`` says otherwise
      needs_pooled_map run the student through ``forward_stages`` so that ``out_s.pooled_map`` holds the
                       map it average-pools into its classifier (NORM)
      views            extra views of each batch whose teacher outputs the method reads ('strong')
      warmup           epochs over which the method's term is ramped in (DKD, ReviewKD, MKL set it)
    The constructor receives the arguments, both networks, one dummy forward of each (``NetOutput``
    in eval mode, for the feature shapes, as RepDistiller builds its modules) and the DataBundle.
    """
    name = None
    needs_feats = False
    preact = False
    teacher_preact = None  # None: as ``preact``
    needs_pooled_map = False
    views = ()
    warmup = 0

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__()
        self.gamma, self.alpha, self.beta = args.gamma, args.alpha, args.beta
        self.kd_T = args.kd_T

    @classmethod
    def data_options(cls, args):
        """Options for build_data: the data this method needs beyond plain batches (CRD's contrast
        sampling, SemCKD's drop_last); the views in ``views`` are added here for every method."""
        return {'strong_view': True} if 'strong' in cls.views else {}

    def teacher_request(self):
        """What the teacher must compute for each batch (see ``run_teacher``)."""
        preact = self.preact if self.teacher_preact is None else self.teacher_preact
        return TeacherRequest(self.needs_feats, preact, tuple(self.views))

    def init_modules(self, student):
        """The modules a first stage trains before the main one: none (``TwoStage`` methods name theirs)."""
        return []

    def trainable_modules(self):
        """Modules the main optimiser trains besides the student (projectors, embeddings...): the method,
        when it has trainable parameters."""
        return [self] if any(p.requires_grad for p in self.parameters()) else []

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

    def standardized(self, logits):
        """The logits a KD-type term reads: as they are; z-scored under --logit_stand in the methods that
        inherit ``logit_stand.LogitStand`` (LS's hook), which overrides this."""
        return logits

    def ce_kd_terms(self, logits_s, logits_t, targets, batch=None, epoch=None):
        """The label and logit terms every composition starts from: gamma * CE, and alpha * KD when weighted
        (on the ``standardized`` logits; CE always reads the raw ones); with --add (``self.added``) the alpha
        slot holds that method's loss instead, as the TTM repo's ``opt.alpha * criterion_div``, under the name
        ``add_<method>`` (it reads ``batch``'s labels and the ``epoch`` of its warm-up, if any)."""
        terms = {'ce': self.gamma * F.cross_entropy(logits_s, targets)}
        if self.alpha and self.added is not None:
            terms[f'add_{self.added.name}'] = self.alpha * self.added.added_loss(logits_s, logits_t, targets, batch,
                                                                                  epoch)
        elif self.alpha:
            terms['kd'] = self.alpha * kd_loss(self.standardized(logits_s), self.standardized(logits_t), self.kd_T)
        return terms

    @classmethod
    def add_refusal(cls):
        """Why this method cannot be another's --add (None when it can): an added method is a loss on the two
        networks' logits alone, composed the default way (its ``method_loss``, ramped), with no first stage."""
        if cls.needs_feats or cls.preact or cls.needs_pooled_map or cls.views:
            return "it reads more than the two networks' logits"
        for hook in ('forward_train', 'run_student', 'losses', 'init_modules'):
            if getattr(cls, hook) is not getattr(Distiller, hook):
                return f"it composes its own training step ({hook})"
        return None

    @property
    def added(self):
        """The --add method (distiller_zoo/add.py), whose loss replaces KD's in the alpha slot; None without."""
        return self._modules.get('added_method')

    def attach_added(self, method):
        """Make ``method`` (a built Distiller whose ``add_refusal`` is None) this one's --add."""
        if method.trainable_modules():
            raise KDZooError(f"--add {method.name}: {method.name} trains modules of its own, which an added loss "
                             f"cannot bring; train it as --distill {method.name}")
        self.add_module('added_method', method)

    def added_loss(self, logits_s, logits_t, targets, batch=None, epoch=None):
        """This method's loss as another's --add: its ``method_loss`` on the logits (and its warm-up)."""
        batch = batch if batch is not None else _Labels(targets)
        if epoch is None and self.warmup:
            raise KDZooError(f"--add {self.name} ramps its loss in over epochs, and this method's ce_kd_terms call "
                             f"passes no epoch; pass epoch= there")
        ramp = self.ramp(epoch) if self.warmup else 1.0
        return ramp * self.method_loss(NetOutput(logits_s), NetOutput(logits_t), batch, epoch)

    def losses(self, out_s, out_t, batch, epoch):
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets, batch, epoch)
        if self.beta:
            terms[self.name] = self.beta * self.ramp(epoch) * self.method_loss(out_s, out_t, batch, epoch)
        return terms

    def predict(self, student, teacher, images):
        """Logits of the student as deployed; SimKD, for one, routes through the teacher's classifier."""
        return student(images)

    def checkpoint_extras(self):
        """Entries saved beside ``model`` in every checkpoint (SimKD's ``proj``)."""
        return {}

    def epoch_values(self):
        """Numbers of the method's own recorded with each epoch's validation, {name: float} (CTKD's learned
        temperature, ``ctkd_T``): they go into the epoch's history in metrics.json and TensorBoard."""
        return {}

    def deployable(self, student, teacher):
        """The network to ship when it is more than the bare student (SimKD: student, projector and the
        teacher's classifier in one module), as ``(module, meta)`` with ``meta`` enough for
        ``distiller_zoo.deploy`` to rebuild it; None when the student alone is the deployed network."""
        return None


class _Labels:
    """A batch with only its labels, for an added loss whose caller has no batch at hand."""

    def __init__(self, targets):
        self.targets = targets


def kd_loss(logits_s, logits_t, temperature):
    """Hinton's KD: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch; in fp32
    at least (fp64 logits stay fp64). ``temperature`` may be a 0-d tensor with a gradient (CTKD's)."""
    log_p_s = F.log_softmax(at_least_fp32(logits_s) / temperature, dim=1)
    log_p_t = F.log_softmax(at_least_fp32(logits_t) / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True) * temperature ** 2


def check_layer(index, feats, flag, network):
    """One clear error when a feature index does not exist in a network's feature list."""
    if not -len(feats) <= index < len(feats):
        raise KDZooError(f"{flag} {index} is out of range for the {network}, which has {len(feats)} "
                         f"feature maps (0..{len(feats) - 1})")
