"""A method's command line: the flags every method reads (``add_loss_weights``), each method's own
(``add_method_arguments`` asks every class that writes ``MethodFlags.add_arguments``), mdistiller's shared
temperature and warm-up flags (``add_ramp_arguments``, ``settle_ramp``), ``settle``, which fills and checks
them once, right after parsing (constructors only read them), and ``require``, the one-line refusal of a flag
that must be positive or cannot be negative.

``MethodFlags`` is the part of the method contract that runs before anything is built, on the class: a
``Distiller`` is one, so a method overrides these classmethods where it has flags of its own.
"""
from helper.errors import KDZooError
from helper.recipe import pin
from . import logit_stand
from .add import add_add_argument, settle_add
from .registry import DISTILLERS
from .two_stage import TwoStage

KD_T = 4.0  # --kd_T when not given (RepDistiller's); under --logit_stand, LS's --base-temp


class MethodFlags:
    """What a method adds to train_student.py's command line and how it settles it.

      default_weights  (gamma, alpha, beta) used when -r/-a/-b are not given: the weights of the
                       script that produced the method's published numbers
      imagenet_weights the same on ImageNet where its recipe weighs them otherwise (None: default_weights)
      reads_flags      flags the method reads that neither its add_arguments nor its bases' add (--kd_T,
                       --init_epochs, another method's flags such as CRD's for CC and NORM+CRD); collected
                       over the bases too (``flag_dests``)
    """
    default_weights = (1.0, 0.0, 0.0)
    imagenet_weights = None
    reads_flags = ('kd_T',)

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

    @staticmethod
    def settings(args):
        """Fill this method's own flags that were not given (they may depend on the pair or the data set)
        and refuse impossible values, writing them back into ``args``."""

    @classmethod
    def defaults_for(cls, args):
        """(gamma, alpha, beta) for -r/-a/-b not given; may depend on the pair (DKD's per-pair beta).
        Also settles the method's own flags (``settings``) before anything is built."""
        cls.settings(args)
        if args.dataset == 'imagenet' and cls.imagenet_weights is not None:
            return cls.imagenet_weights
        return cls.default_weights

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


def add_loss_weights(group):
    """The flags every method reads: -r/-a/-b, --kd_T and --init_epochs."""
    group.add_argument('-r', '--gamma', '-c', '--cls', dest='gamma', type=float, default=None,
                       help='weight of the cross-entropy on labels')
    group.add_argument('-a', '--alpha', '-d', '--div', dest='alpha', type=float, default=None,
                       help='weight of the KD (KL) term')
    group.add_argument('-b', '--beta', type=float, default=None, help="weight of the method's own loss")
    group.add_argument('--kd_T', type=float, default=None,
                       help='KD temperature (4; with --logit_stand on kd and ctkd, --base-temp)')
    group.add_argument('--init_epochs', type=int, default=None,
                       help='init stage of AB, FT, FSP (30) and SSKD (its teacher head, 60)')
    add_add_argument(group)


def add_ramp_arguments(group, method, term, temperature=True):
    """``--<method>_T`` and ``--<method>_warmup`` of a logit method that mdistiller ramps in (DKD, MKL; ReviewKD
    has only the warm-up; ``term`` names its loss in the help), left None for ``settle_ramp`` to fill."""
    if temperature:
        group.add_argument(f'--{method}_T', type=float, default=None, help=f'{term} temperature (4; ImageNet 1)')
    group.add_argument(f'--{method}_warmup', type=int, default=None,
                       help=f'epochs of linear {term} warm-up, min(epoch / warmup, 1) (20; ImageNet 1; not given, '
                            f'scaled by --epochs / 240 (ImageNet: / 100) unless --no_recipe_scaling)')


def settle_ramp(args, method, temperature=True):
    """Fill ``--<method>_T`` (4; ImageNet 1) and ``--<method>_warmup`` (20; ImageNet 1), mdistiller's values, when
    not given, and refuse a temperature that is not positive or a negative warm-up. A warm-up filled here is
    pinned to the reference recipe (helper/recipe.py): a run of other --epochs scales it."""
    imagenet = args.dataset == 'imagenet'
    defaults = {f'{method}_warmup': 1 if imagenet else 20}
    if temperature:
        defaults[f'{method}_T'] = 1.0 if imagenet else 4.0
    for dest, default in defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
            if dest.endswith('_warmup'):
                pin(args, dest)
    require(args, positive=[f'{method}_T'] if temperature else [], non_negative=[f'{method}_warmup'])


def require(args, positive=(), non_negative=(), shown=None):
    """Refuse, in the one line a user reads, the first flag in ``positive`` that is not above 0, else the first
    in ``non_negative`` below 0: ``--<dest> must be positive, got <value>`` / ``cannot be negative`` (floats as
    ``:g``, ints as they are). Both name dests of ``args``; ``shown`` maps a dest to the flag as the message
    names it where users type it otherwise (``{'soft': '-s/--soft'}``)."""
    refused = [(dest, 'must be positive') for dest in positive if getattr(args, dest) <= 0]
    refused += [(dest, 'cannot be negative') for dest in non_negative if getattr(args, dest) < 0]
    if refused:
        dest, rule = refused[0]
        value = getattr(args, dest)
        value = f'{value:g}' if isinstance(value, float) else value
        raise KDZooError(f"{(shown or {}).get(dest, f'--{dest}')} {rule}, got {value}")


def add_method_arguments(parser, methods=None):
    """Every method's own flags on ``parser`` (of ``methods``, default every registered one): each class that
    defines ``add_arguments`` itself is asked once, so subclasses (norm_kd, the ++ variants) share their
    base's flags without guards."""
    owners = dict.fromkeys(klass for cls in (methods or DISTILLERS).values() for klass in cls.__mro__
                           if 'add_arguments' in vars(klass) and klass is not MethodFlags)
    # Which class added which destinations, for ``MethodFlags.flag_dests`` (run folder names, the report).
    parser.flags_added_by = getattr(parser, 'flags_added_by', {})
    for klass in owners:
        before = set(map(id, parser._actions))
        klass.add_arguments(parser)
        parser.flags_added_by[klass] = [action.dest for action in parser._actions if id(action) not in before]
    return parser


def settle(method, args):
    """Settle a parsed command once, before anything is built: LS's flags (``logit_stand.prepare``), --kd_T,
    the method's own flags (``defaults_for``), with --add (distiller_zoo/add.py) the added method's next (-a
    not given is then its own default weight), -r/-a/-b not given from the defaults, and what LS does to the
    weights not given (``logit_stand.finish``); impossible values are refused in one line. Returns the
    sentence that says which weights are used."""
    unset = logit_stand.prepare(method, args)
    if args.kd_T is None:
        args.kd_T = KD_T
    added = settle_add(method, args)
    defaults = dict(zip(('gamma', 'alpha', 'beta'), method.defaults_for(args)))
    if added is not None:
        defaults['alpha'] = added.defaults_for(args)[2]
    taken = [key for key in defaults if getattr(args, key) is None]
    for key in taken:
        setattr(args, key, defaults[key])
    logit_stand.finish(method, args, unset)
    for key, flag in (('gamma', '-r/-c'), ('alpha', '-a/-d'), ('beta', '-b')):
        if getattr(args, key) < 0:
            raise KDZooError(f"the loss weight {flag} cannot be negative, got {getattr(args, key)}")
    if args.init_epochs is None:  # methods without a first stage record RepDistiller's default all the same
        args.init_epochs = (method if issubclass(method, TwoStage) else TwoStage).init_epochs
    require(args, positive=['kd_T'], non_negative=['init_epochs'])
    if added is not None and not args.alpha:
        raise KDZooError(f"--add {added.name} is weighed by -a, which is 0; give -a above 0 (the TTM README's "
                         f"CRD + WTTM command uses -a 4) or drop --add")
    slot = 'KD' if added is None else f"{added.name} (--add)"
    note = f"weights: CE {args.gamma:g}, {slot} {args.alpha:g}, {method.name} {args.beta:g}"
    from_ls = [key for key in taken if key in (unset or ())]
    own = [key for key in taken if key not in from_ls and (added is None or key != 'alpha')]
    parts = [f"{', '.join(own)} from the {method.name} defaults"] if own else []
    if added is not None and 'alpha' in taken and 'alpha' not in from_ls:
        parts.append(f"alpha from the {added.name} defaults")
    if from_ls:
        parts.append(f"{', '.join(from_ls)} from LS's --kd-weight")
    if parts:
        note += f" ({'; '.join(parts)})"
    if unset is not None:
        note += f"; {logit_stand.note(args)}"
    return note
