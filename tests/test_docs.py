"""The documentation cannot drift from the code: the methods table lists exactly the registered methods."""
import os
import re

from conftest import REPO
from distiller_zoo import DISTILLERS
from distiller_zoo import ND
from distiller_zoo.ND import NDMixin

METHODS_DOC = os.path.join(REPO, 'docs', 'methods.md')


def table_names(text):
    """The ``--distill`` names in the first column of the methods table (its rows start with a backticked name)."""
    section = text[text.index('### Methods'):]
    section = section[:section.index('\n### ', 1)]
    names = set()
    for row in re.findall(r'^\| (.*?) \|', section, re.M):
        names.update(re.findall(r'`([^`]+)`', row))
    return names - {'--distill'}


def test_every_registered_method_has_a_row_and_every_row_is_registered():
    names = table_names(open(METHODS_DOC).read())
    # the '<logit method>++' variants ND.py makes for the other logit-only methods (mkl++, ntce++) share the
    # generic '<method>++' row; the ones ND tuned (kd++, dkd++, ...) are classes of ND.py with rows of their own
    generated = {cls.name for cls in DISTILLERS.values()
                 if issubclass(cls, NDMixin) and getattr(ND, cls.__name__, None) is not cls}
    assert generated and '<method>++' in names
    missing = {cls.name for cls in DISTILLERS.values()} - names - generated
    assert not missing, f"methods without a row in docs/methods.md: {sorted(missing)}"
    unknown = {name for name in names if not name.startswith('<')} - set(DISTILLERS)
    assert not unknown, f"rows of methods that are not registered: {sorted(unknown)}"


def test_the_table_checker_sees_a_missing_row():
    text = open(METHODS_DOC).read()
    without_simkd = re.sub(r'^\| `simkd` \|.*\n', '', text, flags=re.M)
    assert 'simkd' in table_names(text) and 'simkd' not in table_names(without_simkd)
