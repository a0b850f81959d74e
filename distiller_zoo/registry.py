"""The ``--distill`` names: ``DISTILLERS`` maps each name to its method class, ``@register('name')`` puts a
class there, and ``method_name`` is the one lookup both single runs and packs resolve a name with (any case,
mdistiller's spellings, one line suggesting the closest names otherwise)."""
from helper.registry import Registry

# mdistiller's names (its configs' DISTILLER.TYPE) for methods RepDistiller, and so kdzoo, names otherwise.
MDISTILLER_NAMES = {'fitnet': 'hint', 'at': 'attention', 'sp': 'similarity'}
DISTILLERS = Registry('--distill', aliases=MDISTILLER_NAMES)
register = DISTILLERS.register


def method_name(name, flag='--distill'):
    """The registered name for ``name`` in any case (mdistiller's configs spell them 'KD', 'DKD', 'REVIEWKD',
    NTCE-KD's 'NTCE'), or one line suggesting the closest names."""
    return DISTILLERS.lookup(name, flag)
