"""Distillation methods, one file each, selectable by their ``--distill`` name (``DISTILLERS``).

Every module of this package is imported here, which registers its methods: adding a method is adding
one file. The names a module lists in ``__all__`` (RepDistiller's loss classes among them, with their
constructor arguments and forward inputs) are importable from the package, e.g.
``from distiller_zoo import DistillKL, HintLoss``.
"""
import importlib
import pkgutil

from .base import DISTILLERS, Borrowed, Distiller, NetOutput, TeacherRequest, register, run_teacher

__all__ = ['DISTILLERS', 'Borrowed', 'Distiller', 'NetOutput', 'TeacherRequest', 'register', 'run_teacher']

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != 'base':
        _module = importlib.import_module(f'{__name__}.{_info.name}')
        for _name in getattr(_module, '__all__', ()):
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
