"""Distillation methods, one file each, selectable by their ``--distill`` name (``DISTILLERS``).

The package's pieces: ``registry`` (the names), ``base`` (``Distiller``, the method contract), ``flags``
(a method's command line), ``teacher`` (what a method asks of the teacher, and the one teacher pass),
``two_stage`` (``TwoStage``, for methods with a first stage), ``pairs`` (what several methods share).

Every other module of this package is a method file, imported here, which registers its methods: adding a
method is adding one file. Once all are registered, the variants derived from them are registered, here and
nowhere else (at the end of this file). The names a module lists in ``__all__`` (RepDistiller's loss
classes among them, with their constructor arguments and forward inputs) are importable from the package,
e.g. ``from distiller_zoo import DistillKL, HintLoss``.
"""
import importlib
import pkgutil

from models.features import NetOutput
from .base import Distiller
from .registry import DISTILLERS, register
from .teacher import Borrowed, TeacherRequest, run_teacher
from .two_stage import TwoStage

__all__ = ['DISTILLERS', 'Borrowed', 'Distiller', 'NetOutput', 'TeacherRequest', 'TwoStage', 'register',
           'run_teacher']

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f'{__name__}.{_info.name}')
    for _name in getattr(_module, '__all__', ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)


# Variants derived from registered methods rather than written as files, registered here once every method
# file is: ND's '<name>++' for each logit-only method that has none of its own (mkl++, ntce++; ND.py writes
# kd++, dkd++, dist++ and reviewkd++).
from .ND import register_plus_plus_variants  # noqa: E402

register_plus_plus_variants(DISTILLERS)
