"""A pack's members are named as single runs name their method: ``--distill KD,DKD`` packs kd and dkd, an
mdistiller name packs the method kdzoo registers for it, and an unknown member is said in the single run's words
(engine/pack_args.py and train_student.py resolve names with the one ``DISTILLERS.lookup``)."""
import pytest

import train_student
from engine.student import student_files
from helper.errors import KDZooError

TEACHER = ['--path_t', 'x/resnet20_vanilla/resnet20_best.pth']


def parse(*argv):
    return train_student.parse_args([*TEACHER, *argv])


def test_members_spelled_in_upper_case_pack_as_their_single_runs():
    upper, lower = parse('--distill', 'KD,DKD'), parse('--distill', 'kd,dkd')
    assert [m.distill for m in upper.members] == ['kd', 'dkd']
    assert [student_files(m).folder for m in upper.members] == [student_files(m).folder for m in lower.members]
    for mine, single in zip(upper.members, (parse('--distill', 'KD'), parse('--distill', 'DKD'))):
        assert (mine.distill, mine.gamma, mine.alpha, mine.beta) == (single.distill, single.gamma, single.alpha,
                                                                     single.beta)


def test_member_flags_and_mdistiller_names_resolve_too():
    dkd, hint = parse('--distill', 'DKD:b=8,FitNet', '--model_s', 'resnet8,resnet14').members
    assert (dkd.distill, dkd.beta) == ('dkd', 8.0)
    assert hint.distill == train_student.parse_args([*TEACHER, '--distill', 'fitnet']).distill == 'hint'


def test_an_unknown_member_is_said_as_a_single_run_says_it():
    with pytest.raises(KDZooError) as single:
        parse('--distill', 'kdd')
    with pytest.raises(KDZooError) as packed:
        parse('--distill', 'KD,kdd')
    assert str(packed.value) == f"pack member 'kdd': {single.value}"
