"""``flags.require``, the one check behind the methods' "must be positive" / "cannot be negative" lines."""
from argparse import Namespace

import pytest

from distiller_zoo.flags import require
from helper.errors import KDZooError


def refusal(args, **checks):
    with pytest.raises(KDZooError) as refused:
        require(args, **checks)
    return str(refused.value)


@pytest.mark.parametrize('value, shown', [(0.0, '0'), (-1.5, '-1.5'), (-2.0, '-2'), (1e-9 - 1, '-1')])
def test_a_float_is_shown_as_g(value, shown):
    assert refusal(Namespace(srd_T=value), positive=['srd_T']) == f'--srd_T must be positive, got {shown}'


def test_an_int_is_shown_as_it_is():
    assert refusal(Namespace(fcfd_paths=-3), non_negative=['fcfd_paths']) == \
        '--fcfd_paths cannot be negative, got -3'
    assert refusal(Namespace(nd_warmup=0), positive=['nd_warmup']) == '--nd_warmup must be positive, got 0'


def test_a_flag_typed_otherwise_than_its_dest_keeps_the_typed_spelling():
    args = Namespace(ls_base_temp=0.0, soft=2.0)
    assert refusal(args, positive=['soft', 'ls_base_temp'], shown={'ls_base_temp': '--base-temp'}) == \
        '--base-temp must be positive, got 0'


def test_zero_fails_positive_and_passes_non_negative():
    require(Namespace(a=1e-12, b=0, c=0.0), positive=['a'], non_negative=['b', 'c'])
    assert refusal(Namespace(b=0), positive=['b']) == '--b must be positive, got 0'


def test_the_first_refused_flag_is_named_positive_ones_first():
    args = Namespace(w=-1.0, t=0.0, u=-1.0)
    assert refusal(args, positive=['u', 't'], non_negative=['w']) == '--u must be positive, got -1'
    assert refusal(args, positive=['t'], non_negative=['w']) == '--t must be positive, got 0'
    assert refusal(args, non_negative=['w']) == '--w cannot be negative, got -1'
