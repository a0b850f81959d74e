"""Epoch constants pinned to a method's reference recipe (helper/recipe.py): scaled to --epochs when the
run's length differs, untouched at the reference length, never when typed, never with --no_recipe_scaling;
what the methods read, record and print."""
import pytest
import torch

import train_student
from dataset.batches import DataBundle
from distiller_zoo import DISTILLERS
from distiller_zoo.NORM import norm_epoch_steps, norm_epoch_weight
from helper.recipe import scale_epochs, schedule_note
from distiller_zoo.teacher import probe_networks
from helper.provenance import describe_run
from models import model_dict


def parse(*argv, model_t='resnet20', dataset='digits'):
    return train_student.parse_args(['--path_t', f'somewhere/{model_t}_vanilla/{model_t}_best.pth',
                                      '--dataset', dataset, *argv])


def old_norm_epoch_weight(epoch, dataset='cifar100'):
    """distiller_zoo/NORM.py's multiplier before the steps could be scaled (commit 82f9967)."""
    steps = {'cifar': ((10, 0.1), (20, 0.5), (180, 1.0), (210, 0.5)),
             'imagenet': ((5, 0.1), (15, 0.5), (60, 0.9), (80, 0.5))}
    for bound, weight in steps['imagenet' if dataset == 'imagenet' else 'cifar']:
        if epoch < bound:
            return weight
    return 0.1


def test_scale_epochs_rounds_half_up_keeps_zero_and_at_least_one():
    assert scale_epochs([10, 20, 180, 210], 12, 240) == [1, 1, 9, 11]  # 0.5 -> 1, 10.5 -> 11
    assert scale_epochs(20, 12, 240) == 1 and scale_epochs(20, 1, 240) == 1 and scale_epochs(20, 480, 240) == 40
    assert scale_epochs(5, 120, 100) == 6 and scale_epochs(1, 120, 100) == 1
    assert scale_epochs(0, 12, 240) == 0
    assert scale_epochs(20, 240, 240) == 20 and scale_epochs([10, 20], 240, 240) == [10, 20]


@pytest.mark.parametrize('dataset, epochs', [('cifar100', 240), ('digits', 240), ('imagenet', 100)])
def test_at_the_reference_length_every_epoch_is_as_before(dataset, epochs):
    model_t = 'ResNet34' if dataset == 'imagenet' else 'resnet20'
    extra = ['--model_s', 'ResNet18'] if dataset == 'imagenet' else []
    args = parse('--distill', 'norm', '--epochs', str(epochs), *extra, model_t=model_t, dataset=dataset)
    assert args.recipe_schedule == {} and schedule_note(args) == ''
    for name in ('dkd', 'reviewkd', 'mkl', 'rld', 'ntce', 'sdd_dkd', 'sdd_nkd', 'kd++', 'dkd++'):
        assert parse('--distill', name, '--epochs', str(epochs), *extra, model_t=model_t,
                     dataset=dataset).recipe_schedule == {}, name
    steps = norm_epoch_steps(dataset)
    for epoch in range(1, epochs + 30):
        assert norm_epoch_weight(epoch, dataset, steps) == old_norm_epoch_weight(epoch, dataset), epoch
        assert norm_epoch_weight(epoch, dataset) == old_norm_epoch_weight(epoch, dataset), epoch


def test_a_12_epoch_run_scales_norms_steps_and_records_them():
    args = parse('--distill', 'norm', '--epochs', '12')
    assert args.recipe_schedule == {'norm_steps': [1, 1, 9, 11]}
    weights = [norm_epoch_weight(e, 'digits', tuple(args.recipe_schedule['norm_steps'])) for e in range(1, 13)]
    assert weights == [1.0] * 8 + [0.5] * 2 + [0.1] * 2
    assert [old_norm_epoch_weight(e) for e in range(1, 13)] == [0.1] * 9 + [0.5] * 3  # the pinned steps
    note = schedule_note(args)
    assert note.startswith('schedules scaled to 12 of 240 epochs: norm_steps 10,20,180,210 -> 1,1,9,11'), note
    record = describe_run(vars(args))
    assert record['settings']['schedule'] == {'norm_steps': [1, 1, 9, 11]}  # the method's row, not the table's
    assert 'schedule' not in record['recipe'] and 'no_recipe_scaling' not in record['settings']
    assert 'schedule' not in describe_run(vars(parse('--distill', 'norm')))['settings']  # 240: as before


def test_no_recipe_scaling_keeps_the_pinned_constants():
    args = parse('--distill', 'norm', '--epochs', '12', '--no_recipe_scaling')
    assert args.recipe_schedule == {} and schedule_note(args) == ''
    assert 'schedule' not in describe_run(vars(args))['settings']
    assert parse('--distill', 'dkd', '--epochs', '12', '--no_recipe_scaling').recipe_schedule == {}


def test_warmups_given_on_the_command_line_are_never_scaled():
    assert parse('--distill', 'dkd', '--epochs', '12').recipe_schedule == {'dkd_warmup': 1}
    assert parse('--distill', 'dkd', '--epochs', '12', '--dkd_warmup', '20').recipe_schedule == {}
    assert parse('--distill', 'reviewkd', '--epochs', '480').recipe_schedule == {'reviewkd_warmup': 40}
    assert parse('--distill', 'ntce', '--epochs', '60').recipe_schedule == {'mkl_warmup': 5}
    assert parse('--distill', 'rld', '--epochs', '12').recipe_schedule == {'rld_warmup': 1}
    assert parse('--distill', 'sdd_dkd', '--epochs', '12').recipe_schedule == {'dkd_warmup': 1}
    assert parse('--distill', 'sdd_nkd', '--epochs', '12').recipe_schedule == {'sdd_nkd_warmup': 1}
    # a ++ method ramps by ND's warm-up alone: the base's own is not scaled (nor used)
    assert parse('--distill', 'dkd++', '--epochs', '12').recipe_schedule == {'nd_warmup': 1}
    assert parse('--distill', 'kd++', '--epochs', '12', '--nd_warmup', '20').recipe_schedule == {}
    assert parse('--distill', 'kd', '--epochs', '12').recipe_schedule == {}  # nothing pinned
    # ImageNet's constants belong to 100-epoch recipes
    assert parse('--distill', 'dkd++', '--model_s', 'ResNet18', model_t='ResNet34',
                 dataset='imagenet').recipe_schedule == {'nd_warmup': 6}


def build(name, *argv):
    args = parse('--distill', name, '--model_s', 'resnet8', *argv)
    teacher = model_dict['resnet20'](num_classes=10).eval()
    student = model_dict['resnet8'](num_classes=10)
    probe_s, probe_t = probe_networks(student, teacher, DISTILLERS[name].preact, 32)
    data = DataBundle(train=None, val=None, num_classes=10, num_train=64, train_labels=None)
    return DISTILLERS[name](args, student, teacher, probe_s, probe_t, data)


def test_the_methods_use_the_scaled_values():
    torch.manual_seed(0)
    dkd = build('dkd', '--epochs', '12')
    assert dkd.warmup == 1 and dkd.ramp(1) == 1.0
    assert build('dkd', '--epochs', '240').ramp(1) == 1 / 20
    assert build('dkd', '--epochs', '12', '--no_recipe_scaling').ramp(1) == 1 / 20
    assert build('sdd_nkd', '--epochs', '12').warmup == 1
    assert build('norm', '--epochs', '12').steps == (1, 1, 9, 11)
    assert build('norm', '--epochs', '12', '--no_recipe_scaling').steps == (10, 20, 180, 210)


def test_help_names_the_switch(capsys):
    with pytest.raises(SystemExit):
        train_student.parse_args(['--help'])
    out = ' '.join(capsys.readouterr().out.split())
    assert '--no_recipe_scaling' in out and 'epochs / reference' in out
    assert 'scaled by --epochs / 240' in out  # the warm-up flags say so too
