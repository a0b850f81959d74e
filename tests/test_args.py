"""Argument rules shared by the scripts: recipes, RepDistiller's lr rule, decay epochs, schedules."""
import argparse

import pytest

from engine.args import parse_decay_epochs, parser_for, resolve_common_args
from helper.errors import KDZooError
from helper.schedule import learning_rate_at


def resolved(model, *argv):
    return resolve_common_args(parser_for('t').parse_args(list(argv)), model)


def test_cifar_recipe_defaults():
    args = resolved('resnet8x4')
    assert (args.batch_size, args.epochs, args.learning_rate, args.lr_decay_epochs, args.weight_decay) == \
        (64, 240, 0.05, [150, 180, 210], 5e-4)


def test_imagenet_recipe_defaults():
    args = resolved('ResNet18', '--dataset', 'imagenet')
    assert (args.batch_size, args.epochs, args.learning_rate, args.lr_decay_epochs, args.weight_decay) == \
        (256, 120, 0.1, [30, 60, 90], 1e-4)


@pytest.mark.parametrize('model', ['MobileNetV2', 'MobileNetV2_1_0', 'ShuffleV1', 'ShuffleV2', 'ShuffleV2_1_5'])
def test_mobile_students_get_lr_001_and_are_told_why(model):
    args = resolved(model)
    assert args.learning_rate == 0.01 and 'RepDistiller' in args.lr_note


def test_an_explicit_lr_is_kept_even_for_mobile_models():
    args = resolved('ShuffleV1', '--learning_rate', '0.02')
    assert args.learning_rate == 0.02 and 'would force 0.01' in args.lr_note


def test_decay_epochs_parsing():
    assert parse_decay_epochs('150,180,210') == [150, 180, 210]
    assert parse_decay_epochs(' 30, 60 ') == [30, 60]
    for bad in ('', '180,150', '150,150', 'a,b', '0,10', '1.5'):
        with pytest.raises(KDZooError, match='rising list'):
            parse_decay_epochs(bad)


def test_step_schedule_matches_repdistiller():
    args = argparse.Namespace(lr_decay='step', learning_rate=0.05, lr_decay_rate=0.1,
                              lr_decay_epochs=[150, 180, 210], epochs=240)
    # RepDistiller: lr * rate ** sum(epoch > milestones), epochs counted from 1
    expected = {1: 0.05, 150: 0.05, 151: 0.005, 180: 0.005, 181: 0.0005, 211: 0.00005, 240: 0.00005}
    for epoch, lr in expected.items():
        assert learning_rate_at(epoch, args) == pytest.approx(lr)


def test_cosine_schedule():
    args = argparse.Namespace(lr_decay='cos', learning_rate=0.1, epochs=300)
    assert learning_rate_at(1, args) == pytest.approx(0.1)
    assert learning_rate_at(151, args) == pytest.approx(0.05)
    assert learning_rate_at(300, args) < 1e-5


def test_nesterov_flag_reaches_the_optimiser():
    import torch
    from engine.setup import sgd
    layer = torch.nn.Linear(2, 2)
    plain, nesterov = (sgd([layer], resolved('resnet8', *flags)) for flags in ((), ('--nesterov',)))
    assert plain.param_groups[0]['nesterov'] is False and nesterov.param_groups[0]['nesterov'] is True
    # one step differs as Nesterov's look-ahead says: for the first step it is lr * (1 + momentum) * grad
    layer.weight.grad = torch.ones(2, 2)
    layer.bias.grad = torch.ones(2)
    before = layer.weight.detach().clone()
    nesterov.step()
    args = resolved('resnet8')
    expected = before - args.learning_rate * (1 + args.momentum) * (1 + args.weight_decay * before)
    assert torch.allclose(layer.weight, expected)
