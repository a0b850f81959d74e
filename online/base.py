"""The interface every online method implements, and the registry of their names.

An online method trains its networks from scratch, with no frozen teacher: L-MCL's peers, ONE's branches,
or one network alone (the online tables' baseline). A method is one ``OnlineMethod`` subclass in its own file
of ``online/``, registered with ``@register('name')``; ``online.method_name`` says which one the parsed flags
of train_online_mcl.py select (``--baseline``, ``--arch one_<model>``, ``--no-meta``, else L-MCL). The
contract, shaped as a ``Distiller``'s (distiller_zoo/base.py):

1. Settings are settled once, right after parsing, by ``settle(args, resolve)``: the networks (``networks``:
   their zoo names, kept in ``args.peers``; an unknown name or a data set the method does not train on is one
   line), the L-MCL repo's spellings of the schedule (``--lr-type``, ``--milestones``), the method's
   ``recipe`` for the shared flags left unset, its own checks (``check``), the optimiser it declares
   (``nesterov``, recorded in ``args.nesterov`` so that metrics.json says what ran), then the shared checks
   (``resolve``: the script's engine.args.resolve_common_args), the epoch constants the method pins to its
   reference recipe (``pinned``: ONE's ramp-up) scaled to --epochs (helper/recipe.py; the announce
   line says what was scaled) and the sentence ``args.lr_note``. Nothing writes into ``args`` afterwards:
   constructors and hooks only read it (``scheduled(args, name)`` is a pinned flag's value in use). Flags of
   a method's own come from its ``add_arguments`` (asked once per class that defines it, so MCL shares
   L-MCL's); every method's flags are on the parser, so a flag name must not clash with another method's.
2. ``build(args, num_classes)`` builds the trained network (``build_network``) and the method around it.
   ``self.model`` is what the checkpoints save under ``model`` (L-MCL's peer set, ONE's multi-branch network,
   the plain network); ``trainable_modules()`` is what the run's optimiser updates: the model and the
   method's own trained modules (L-MCL's projection heads and aggregator; not its meta network, which has its
   own optimiser). ``optimizer(args)`` is that optimiser: SGD over exactly those parameters, with Nesterov
   momentum where the method declares it (``nesterov = True``: the L-MCL repo's) or ``--nesterov`` asks.
3. ``step(batch, epoch)`` runs the networks on a batch and returns ``TrainStep(logits, losses)``: the logits
   the method trained on (for the training accuracy) and its named, already-weighted loss terms, whose sum
   the engine minimises, as a ``Distiller``'s ``forward_train``. ``after_step(batch, epoch, step, lr)`` runs
   after each optimiser step (L-MCL's meta step). A method never writes into the batch.
4. Validation and export: ``validate(loader, device, precision, score)`` gives the top-1, top-5 and mean loss
   of the deployed network(s) and a dict of extra numbers for the epoch record (every peer's, branch's and
   ensemble's top-1); by default ``score``, the engine's evaluation of one network, of ``predict``.
   ``after_epoch(state, files)`` runs once an epoch's checkpoints are written: each deployed network
   (``deployed()``) is exported as a plain zoo checkpoint that tools/eval.py and ``--path_t`` read.
   ``resume_state()``/``load_resume_state()`` carry everything besides ``model`` that an exact resume needs.
5. The run: ``run_name``/``run_files`` (``save/online/models/<run name>/`` and the method's extra files),
   ``prepare_data(args, data)`` (L-MCL's class-balanced batches), ``logger_class`` (L-MCL's adds a line per
   epoch with every peer), ``announce(args, data, device, precision, seed)``, the one line before training,
   and ``summary(...)``, the lines after it (rank 0).

engine/online.py makes any method an ``engine.objective.Objective`` of the shared loop, and train_online_mcl.py
hands these pieces to the one run skeleton every script uses (engine/run.py), so a new method is one new file
and the script holds no per-method code. ``online/`` sits on the methods floor and never
imports ``engine/``: what it needs of the engine comes in as arguments (``resolve``, ``score``).
"""
from typing import NamedTuple

import torch
import torch.nn as nn

from helper.recipe import pin, schedule_note, settle_schedule
from helper.checkpoint import restore_resume_state
from helper.logger import RunLogger
from helper.registry import Registry
from helper.run_files import RunFiles
from helper.schedule import sgd

ONLINE_METHODS = Registry('online method')
register = ONLINE_METHODS.register

# The method train_online_mcl.py trains without selection flags: its recipe is the one --help states.
DEFAULT_METHOD = 'lmcl'
# The L-MCL repo's --lr-type values, as --lr_decay's.
LR_TYPES = {'cosine': 'cos', 'multistep': 'step'}


class TrainStep(NamedTuple):
    """What a method's ``step`` returns; unpacks as a ``Distiller``'s ``forward_train`` result."""
    logits: torch.Tensor  # the logits it trained on, for the training accuracy
    losses: dict          # name -> already-weighted scalar loss term; their sum is minimised


def online_run_name(arch, number_net, method, dataset, trial):
    """Run folder: e.g. ``lmcl_resnet32_cifar_x2_lmcl_cifar100_trial_0`` (``mcl`` with --no-meta)."""
    return f'{arch}_x{number_net}_{method}_{dataset}_trial_{trial}'


def millions(module):
    """'1.23M': the parameters of a module, for the announce line."""
    return f'{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M'


class OnlineMethod(nn.Module):
    """One online method: its networks (``model``), its own trained modules, its step and its run.

    Class attributes:
      recipe    defaults of the shared flags left unset (epochs, batch size, lr and its schedule, weight
                decay) on the 32x32 data sets; on ImageNet the shared ImageNet recipe fills them
      pinned    {dest: (default, reference epochs)}: the method's own flags, parsed as None, whose default is
                an epoch count of a recipe of that length (ONE's ramp-up); left unset, the default is pinned
                to it and scaled to --epochs (helper/recipe.py)
      nesterov  True: SGD with Nesterov momentum whatever --nesterov says (the L-MCL repo's optimiser);
                False: as --nesterov says
      logger_class  the run's logger (helper.logger.RunLogger, or a subclass with the method's own lines)
    """
    name = None
    recipe = {}
    pinned = {}
    nesterov = False
    logger_class = RunLogger

    def __init__(self, model, args):
        super().__init__()
        self.model = model

    # ---- flags and settings (class methods: run before anything is built) ---------------------------
    @classmethod
    def add_arguments(cls, parser):
        """The method's own flags (``add_online_arguments`` asks each class that defines this once)."""

    @classmethod
    def networks(cls, args):
        """The zoo names of the networks the method trains, or one line saying what is wrong."""
        raise NotImplementedError

    @classmethod
    def check(cls, args):
        """Refuse impossible values of the method's own flags, one line each."""

    @classmethod
    def settle(cls, args, resolve):
        """Settle a parsed command once (see the module text); ``resolve(args, model_name)`` is the shared
        resolution and checks of the script (engine.args.resolve_common_args). Returns the arguments."""
        args.one = cls.name == 'one'  # recorded by every online run since before the registry
        args.peers = cls.networks(args)
        if args.lr_type is not None:
            args.lr_decay = LR_TYPES[args.lr_type]
        if args.milestones is not None:
            args.lr_decay_epochs = ','.join(map(str, args.milestones))
        recipe = cls.recipe if args.dataset != 'imagenet' else {}
        for key, value in {'lr_decay': 'step', **recipe}.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        cls.fill_pinned(args)
        cls.check(args)
        if cls.nesterov:
            args.nesterov = True
        args = resolve(args, args.peers[0])
        settle_schedule(args)  # the epoch constants the method pinned (ONE's ramp-up), scaled to --epochs
        args.lr_note = (f"lr {args.learning_rate} ({'cosine' if args.lr_decay == 'cos' else 'step'} decay), "
                        f"{'Nesterov ' if args.nesterov else ''}SGD momentum {args.momentum}, weight decay "
                        f"{args.weight_decay}, batch {args.batch_size}")
        return args

    @classmethod
    def fill_pinned(cls, args):
        """Fill every method's pinned flag left unset with its default, and pin this method's own. Other
        methods' flags are filled too so that their runs record the values they always recorded."""
        for klass in dict.fromkeys(ONLINE_METHODS.values()):
            for dest, (default, reference) in klass.pinned.items():
                if getattr(args, dest) is None:
                    setattr(args, dest, default)
                    if issubclass(cls, klass):
                        pin(args, dest, reference=reference)

    # ---- networks, modules, optimiser -----------------------------------------------------------
    @classmethod
    def build_network(cls, args, num_classes):
        """The network saved under the checkpoints' ``model`` key, freshly initialised."""
        raise NotImplementedError

    @classmethod
    def build(cls, args, num_classes):
        """The method with its networks, for settled arguments (the global random state is drawn in the
        order: networks, then the method's own modules)."""
        return cls(cls.build_network(args, num_classes), args)

    def trainable_modules(self):
        """Modules whose parameters the run's optimiser updates."""
        return [self.model]

    def optimizer(self, args):
        """The run's optimiser over ``trainable_modules`` (build it after any BatchNorm conversion)."""
        return sgd(self.trainable_modules(), args, self.nesterov)

    def deployed(self):
        """The networks that are shipped (each a plain zoo model): what the announce line counts."""
        return [self.model]

    # ---- a training step ----------------------------------------------------------------------
    def step(self, batch, epoch):
        """``TrainStep(logits, losses)`` of one training step on ``batch`` (1-based ``epoch``)."""
        raise NotImplementedError

    def after_step(self, batch, epoch, step, lr):
        """Called after each optimiser step with the 1-based step of the epoch and the lr."""

    def predict(self, images):
        """Logits of the deployed network (the first, where there are several)."""
        return self.model(images)

    # ---- validation, export, resume -------------------------------------------------------------
    def validate(self, loader, device, precision, score):
        """(top-1, top-5, mean loss, extra numbers for the epoch record); ``score(predict, loader, device,
        precision)`` is the engine's (top-1, top-5, mean loss) of one network."""
        return (*score(self.predict, loader, device, precision), {})

    def after_epoch(self, state, files):
        """Called once an epoch's checkpoints are written (and again after a resume)."""

    def checkpoint_extras(self):
        """Entries saved beside ``model`` in every checkpoint."""
        return {}

    def resume_state(self):
        """Everything besides ``model`` that an exact resume needs: the method's own modules' state."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith('model.')}

    def load_resume_state(self, model_state, extra_state):
        # Entries that are no module state (an optimiser's) are the subclass's to load.
        restore_resume_state(self, model_state, extra_state, self.resume_state())

    # ---- the run --------------------------------------------------------------------------------
    @classmethod
    def run_name(cls, args):
        """The run folder's name under save/online/models/."""
        return online_run_name(args.arch, len(args.peers), cls.name, args.dataset, args.trial)

    @classmethod
    def run_files(cls, args):
        """The run's folder and files (the checkpoints are named after ``--arch``)."""
        return RunFiles(args.save_root, 'online', cls.run_name(args), args.arch)

    @classmethod
    def prepare_data(cls, args, data):
        """Adjust the training loader before anything is written (L-MCL's class-balanced batch order)."""

    def announce(self, args, data, device, precision, seed):
        """The line printed before training: method, networks, data, device, recipe, seed."""
        scaled = schedule_note(args)
        return (f"{self.name} {args.arch}: {self.networks_note(args)}; {args.dataset} ({data.num_train} training "
                f"images, {len(data.train)} steps per epoch); {device.type}, {precision}; {args.lr_note}; "
                f"{self.settings_note(args)}seed {seed}{'; ' + scaled if scaled else ''}")

    def networks_note(self, args):
        return f"{' & '.join(args.peers)} ({', '.join(millions(m) for m in self.deployed())} parameters deployed)"

    def settings_note(self, args):
        """The method's own settings for the announce line, ending in '; ' (or nothing)."""
        return ''

    def summary(self, args, files, state):
        """The lines printed after training (rank 0)."""
        last = state['history'][-1]
        return (f"{self.name} {args.peers[0]}: last top-1 {last['val_top1']:.2f}%, best {state['best_acc']:.2f}% "
                f"at epoch {state['best_epoch']}; saved in {files.folder}")


def add_online_arguments(parser):
    """train_online_mcl.py's flags beyond the shared ones: the L-MCL repo's spellings of shared flags, the
    networks, then every registered method's own flags."""
    # The L-MCL spellings of shared flags write to the same destinations; None means "not given", and the
    # method's recipe fills it.
    parser.set_defaults(lr_decay=None)
    recipe = ONLINE_METHODS[DEFAULT_METHOD].recipe
    for action in parser._actions:
        if action.dest in recipe:  # '%(default).0s' prints nothing and stops the formatter's "(default: None)"
            action.help = f"default {recipe[action.dest]} (the L-MCL recipe)%(default).0s"
    spell = parser.add_argument_group("the L-MCL repo's spellings of shared flags")
    spell.add_argument('--batch-size', dest='batch_size', type=int, help='= --batch_size (default 128)')
    spell.add_argument('--init-lr', dest='learning_rate', type=float, help='= --learning_rate (default 0.1)')
    spell.add_argument('--weight-decay', '--wd', dest='weight_decay', type=float,
                       help='= --weight_decay (default 5e-4; ONE 1e-4)')
    spell.add_argument('--lr-type', choices=sorted(LR_TYPES), default=None,
                       help="'cosine' (default) or 'multistep' (x0.1 at --milestones); = --lr_decay cos|step")
    spell.add_argument('--milestones', '--schedule', dest='milestones', type=int, nargs='+', default=None,
                       help='= --lr_decay_epochs (150 225; ONE 151 225)')
    spell.add_argument('--manual_seed', dest='seed', type=int, help='= --seed')
    spell.add_argument('--gpu-id', dest='gpu_id', help='= --gpu_id')
    parser.add_argument_group('epoch constants').add_argument(
        '--no_recipe_scaling', action='store_true',
        help="keep the epoch constants that online methods pin to their reference recipe: ONE's "
             "--consistency_rampup 80 of its 300 epochs (on every data set). Without it a run of other --epochs "
             "gets them, when not given, scaled by epochs / reference, rounded half up (at least 1)")

    net = parser.add_argument_group('networks')
    net.add_argument('--arch', default='lmcl_resnet32_cifar',
                     help="an L-MCL name (lmcl_resnet32_cifar, lmcl_shufflev2_res110_cifar, ...), with "
                          "--baseline one network (resnet32_cifar, or any zoo name), or one_<zoo name> for ONE "
                          "(one_resnet32, one_resnet110 = ONE's bottleneck ResNet-110, one_ResNet18, ...)")
    net.add_argument('--number-net', dest='number_net', type=int, default=2, help='peers (homogeneous --arch)')
    net.add_argument('--baseline', action='store_true', help="one network with cross-entropy "
                     "(the L-MCL repo's main_cifar_baseline.py): the tables' baseline column")

    for klass in dict.fromkeys(klass for cls in ONLINE_METHODS.values() for klass in cls.__mro__
                               if 'add_arguments' in vars(klass) and klass is not OnlineMethod):
        klass.add_arguments(parser)
    return parser
