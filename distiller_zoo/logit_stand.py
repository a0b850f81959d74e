"""LS: Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR 2024), as the official code
(sunshangquan/logit-standardization-KD) runs it: a modifier of logit methods, ``--logit_stand``.

LS z-scores each row of both networks' logits, (z - mean) / (1e-7 + std), before the temperature softmax of a
KD-type term; the cross-entropy on the labels reads the raw logits. With it, train.py's ``--base-temp`` (2)
replaces the term's temperature and ``--kd-weight`` (9) its weight: KD's KD_WEIGHT becomes it, DKD's ALPHA
and BETA (RLD's ALPHA and BETA) are multiplied by it. Here that happens only to the values not given on the
command line (train.py also overrides values its config gives), and ``--base-temp``/``--kd-weight`` themselves
default to the README's per-pair values (the links of its CIFAR-100 table name each run's log
``TYPE,TEACHER,STUDENT,BASE_TEMPERATURE,KD_WEIGHT[,BETA]``), train.py's 2 and 9 for other pairs and data sets.

The hook: a method LS can modify inherits ``LogitStand`` first among its bases (``class KD(LogitStand,
Distiller)``), declares what LS changes in its defaults, and passes each logit tensor its KD-type terms read
through ``self.standardized`` (the identity without --logit_stand):

  ls_temperatures  its temperature flags (dests) that become --base-temp when not given (KD: kd_T)
  ls_weights       its weight flags that become --kd-weight when not given (KD: alpha)
  ls_scaled        its weight flags multiplied by --kd-weight when not given (DKD: dkd_alpha, dkd_beta)
  ls_published     {(teacher, student): {'base_temp': T, 'kd_weight': w, <its flag>: value ...}}, the README's
                   runs where they differ from 2 and 9 (DKD's also carry the BETA of the log's name, which is
                   then scaled as any other value not given); a '++' method (ND) keeps only train.py's 2 and 9

``flags.settle`` calls ``prepare`` before the method's ``defaults_for`` and ``finish`` after it; a method that
does not inherit ``LogitStand`` (or sets ``ls_defined = False``, as SDD-DKD, a DKD whose own terms are regional)
refuses --logit_stand in one line. Today kd, dkd, ctkd, rld and mlkd opt in, with their '++'. MLKD declares its
-b and T0 in ``ls_weights``/``ls_temperatures``, the README's MLKD values in ``ls_published`` (2, 6 for
resnet32x4 -> ShuffleV2, vgg13 -> vgg8, vgg13 -> MobileNetV2; 2, 9 elsewhere), and z-scores the logits of its
instance terms only (LS's MLKD.py standardises neither cc_loss nor bc_loss; its KD weight multiplies all three).

``--ls_std`` chooses the standard deviation: ``sample`` (default) is the code's ``torch.std`` (Bessel's
correction, 1 / (K - 1)) plus 1e-7, in every ``normalize`` of the official repository (KD.py, DKD.py, MLKD.py,
CTKD/distiller_zoo/KD.py, tiny-transformers); ``population`` divides by the plain standard deviation over the
K classes (1 / K, no epsilon), the Z-score as the paper writes it. The two differ by the constant factor
sqrt(K / (K - 1)), i.e. a temperature 0.5 % higher for K = 100.
"""

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .registry import DISTILLERS

__all__ = ['standardize', 'LogitStand', 'LS_BASE_TEMP', 'LS_KD_WEIGHT']

# tools/train.py's --base-temp and --kd-weight defaults (LS's and RLD's).
LS_BASE_TEMP, LS_KD_WEIGHT = 2.0, 9.0
LS_FLAGS = ('logit_stand', 'ls_base_temp', 'ls_kd_weight', 'ls_std')


def standardize(logits, std='sample'):
    """Each row z-scored: the official ``normalize``, (z - mean) / (1e-7 + std) with Bessel's correction
    (``std='sample'``), or (z - mean) / std over 1 / K (``'population'``); computed in fp32 at least."""
    z = at_least_fp32(logits)
    centred = z - z.mean(dim=-1, keepdim=True)
    if std == 'population':
        return centred / centred.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return centred / (1e-7 + z.std(dim=-1, keepdim=True))


class LogitStand:
    """The LS hook of a method (see the module's docstring): its flags on the command line, the defaults
    --logit_stand changes, and ``standardized``, the z-scoring its KD-type terms apply to their logits."""
    ls_defined = True  # False in a subclass whose own loss reads no standardized logits (SDD-DKD)
    ls_temperatures = ()
    ls_weights = ()
    ls_scaled = ()
    ls_published = {}

    def __init__(self, args, *rest):
        super().__init__(args, *rest)
        self.logit_stand = bool(getattr(args, 'logit_stand', False))
        self.ls_std = getattr(args, 'ls_std', None) or 'sample'

    def standardized(self, logits):
        """The logits a KD-type term reads: z-scored under --logit_stand, else as they are."""
        return standardize(logits, self.ls_std) if self.logit_stand else logits

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group(
            'LS, logit standardisation (CVPR 2024), for kd, dkd, ctkd, rld, mlkd and their ++')
        group.add_argument('--logit_stand', '--logit-stand', '--rld_logit_stand', dest='logit_stand',
                           action='store_true',
                           help="z-score both networks' logits before the temperature softmax of the KD-type "
                                "terms (the official --logit-stand; --rld_logit_stand is its old name for rld); "
                                "the temperature and weights not given become --base-temp and --kd-weight's")
        group.add_argument('--ls_base_temp', '--base-temp', '--base_temp', dest='ls_base_temp', type=float,
                           default=None,
                           help="LS's temperature (tools/train.py's --base-temp: 2; the LS README's CIFAR-100 "
                                "runs per pair, e.g. 3 for vgg13 -> vgg8 with kd)")
        group.add_argument('--ls_kd_weight', '--kd-weight', '--kd_weight', dest='ls_kd_weight', type=float,
                           default=None,
                           help="LS's KD weight (--kd-weight: 9), which replaces kd's and ctkd's -a and multiplies "
                                "dkd's and rld's alpha and beta (per pair as the LS README's runs)")
        group.add_argument('--ls_std', choices=('sample', 'population'), default=None,
                           help="the z-score's std: 'sample', the official code's torch.std + 1e-7 (default), or "
                                "'population', over 1/K without epsilon, as the paper writes the Z-score")


def ls_methods():
    """The registered names that --logit_stand can modify."""
    return sorted(name for name, cls in DISTILLERS.items() if modifiable(cls) and name == cls.name)


def modifiable(method):
    """Whether --logit_stand is defined for the method class."""
    return issubclass(method, LogitStand) and method.ls_defined


def _published(method, args):
    return {} if args.dataset == 'imagenet' else method.ls_published.get((args.model_t, args.model_s), {})


def prepare(method, args):
    """Before the method settles its own flags: refuse LS where it is not defined or its flags without it,
    fill --base-temp/--kd-weight, set the temperatures (and the published values of the method's own flags)
    not given. Returns the weight flags left for ``finish`` (those not given), or None without LS."""
    stand = bool(getattr(args, 'logit_stand', False))
    opted = modifiable(method)
    if not stand:
        given = [flag for dest, flag in (('ls_base_temp', '--base-temp'), ('ls_kd_weight', '--kd-weight'),
                                         ('ls_std', '--ls_std')) if getattr(args, dest, None) is not None]
        if given:
            raise KDZooError(f"{given[0]} sets logit standardisation (LS); it acts only with --logit_stand")
    elif not opted:
        raise KDZooError(f"--logit_stand (LS) z-scores the logits of KD-type terms, and {method.name} has none it "
                         f"is defined for; it modifies {', '.join(ls_methods())}")
    if not opted:
        return None
    published = _published(method, args)
    if args.ls_base_temp is None:
        args.ls_base_temp = float(published.get('base_temp', LS_BASE_TEMP))
    if args.ls_kd_weight is None:
        args.ls_kd_weight = float(published.get('kd_weight', LS_KD_WEIGHT))
    if args.ls_std is None:
        args.ls_std = 'sample'
    if args.ls_base_temp <= 0:
        raise KDZooError(f"--base-temp must be positive, got {args.ls_base_temp:g}")
    if args.ls_kd_weight < 0:
        raise KDZooError(f"--kd-weight cannot be negative, got {args.ls_kd_weight:g}")
    if not stand:
        return None
    unset = [dest for dest in (*method.ls_weights, *method.ls_scaled) if getattr(args, dest) is None]
    for dest in method.ls_temperatures:
        if getattr(args, dest) is None:
            setattr(args, dest, args.ls_base_temp)
    for dest, value in published.items():
        if dest not in ('base_temp', 'kd_weight') and getattr(args, dest) is None:
            setattr(args, dest, value)
    return unset


def finish(method, args, unset):
    """After the method's defaults are in: the weights not given become, or are multiplied by, --kd-weight."""
    for dest in unset or ():
        value = args.ls_kd_weight if dest in method.ls_weights else getattr(args, dest) * args.ls_kd_weight
        setattr(args, dest, value)


def note(args):
    """The words the run's weights line adds under LS."""
    return (f"LS: logits z-scored ({args.ls_std} std), --base-temp {args.ls_base_temp:g}, "
            f"--kd-weight {args.ls_kd_weight:g}")
