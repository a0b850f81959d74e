"""The parts distiller_zoo/ is split into: the registry of names, a method's flags (``MethodFlags``) and the
first stage of two-stage methods (``TwoStage``)."""
import argparse

import pytest

import distiller_zoo
from distiller_zoo import DISTILLERS, Distiller, TwoStage
from distiller_zoo.flags import MethodFlags, add_loss_weights, add_method_arguments, settle

TWO_STAGE = {'abound', 'factor', 'fsp', 'sskd'}


def test_exactly_the_two_stage_methods_take_the_mixin_and_the_others_have_no_first_stage():
    taking = {name for name, cls in DISTILLERS.items() if issubclass(cls, TwoStage)}
    assert taking == TWO_STAGE
    assert Distiller.init_modules(None, student=None) == []  # the one question the engine asks every method
    for hook in ('init_loss', 'init_lr_at', 'init_teacher_request', 'forward_init', 'init_stage_only'):
        assert not hasattr(Distiller, hook), hook
    assert issubclass(Distiller, MethodFlags)


@pytest.mark.parametrize('name, epochs', [('kd', 30), ('abound', 30), ('sskd', 60)])
def test_init_epochs_not_given_is_the_methods_default_and_only_two_stage_methods_read_it(name, epochs):
    args = argparse.Namespace(**distiller_zoo.method_flags(), dataset='cifar100', model_s='resnet8',
                              model_t='resnet32')  # every flag at its parser default: --init_epochs None
    settle(DISTILLERS[name], args)
    assert args.init_epochs == epochs
    parser = add_method_arguments(argparse.ArgumentParser())
    add_loss_weights(parser)
    assert ('init_epochs' in DISTILLERS[name].flag_dests(parser)) == (name in TWO_STAGE)
