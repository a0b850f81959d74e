"""Online methods: networks trained together from scratch (L-MCL, MCL, ONE, and the tables' single-network
baseline), one file each, registered by name in ``ONLINE_METHODS`` (online/base.py holds the contract).

Every module of this package is imported here, which registers its methods: adding a method is adding one
file (and, where new flags select it, a line of ``method_name``). engine/online.py makes any of them an
Objective of the shared training loop for train_online_mcl.py.
"""
import importlib
import pkgutil

from .base import ONLINE_METHODS, OnlineMethod, TrainStep, add_online_arguments, register

__all__ = ['ONLINE_METHODS', 'OnlineMethod', 'TrainStep', 'add_online_arguments', 'method_name', 'online_method',
           'register', 'selection_argv']

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != 'base':
        importlib.import_module(f'{__name__}.{_info.name}')

from .one import ONE_PREFIX  # noqa: E402  (after the registration above)


def method_name(args):
    """The registered method train_online_mcl.py's parsed flags select: --baseline, --uskd, --arch one_<zoo
    name>, --no-meta (MCL), else L-MCL."""
    if args.baseline:
        return 'baseline'
    if getattr(args, 'uskd', False):
        return 'uskd'
    if args.arch.startswith(ONE_PREFIX):
        return 'one'
    return 'mcl' if args.no_meta else 'lmcl'


def online_method(args):
    """The class of the method the parsed flags select."""
    return ONLINE_METHODS[method_name(args)]


def selection_argv(args):
    """The flags that select the method and its networks on the data set: what a run's defaults (``run_defaults``,
    its folder and report labels) are resolved from."""
    return ['--arch', args.arch, '--number-net', str(args.number_net), '--dataset', args.dataset,
            *(['--baseline'] if args.baseline else []), *(['--no-meta'] if args.no_meta else []),
            *(['--uskd'] if getattr(args, 'uskd', False) else [])]
