"""The parts distiller_zoo/ is split into: the registry of names, a method's flags (``MethodFlags``), the
first stage of two-stage methods (``TwoStage``), the teacher side (``run_teacher`` and the merged passes a
pack runs) and the derived '++' variants the package registers once every method file is imported."""
import argparse

import pytest
import torch

import distiller_zoo
from distiller_zoo import DISTILLERS, Distiller, TwoStage
from distiller_zoo.ND import NDMixin, register_plus_plus_variants
from distiller_zoo.flags import MethodFlags, add_loss_weights, add_method_arguments, settle
from distiller_zoo.teacher import TeacherRequest, run_teacher, served_output, shared_passes
from dataset.batches import Batch
from helper.registry import Registry
from models import model_dict

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


def requests():
    return [TeacherRequest(), TeacherRequest(True), TeacherRequest(True, True), TeacherRequest(views=('strong',)),
            TeacherRequest(True, True, ('strong',)), TeacherRequest(True, view='strong'),
            TeacherRequest(True, needed=False)]


@pytest.mark.parametrize('request_', requests())
def test_a_single_request_is_its_own_and_only_pass(request_):
    """A single run is a pack of one: the merged passes of one request are that request's own pass."""
    if not request_.needed:
        assert shared_passes([request_]) == []
    else:
        assert shared_passes([request_]) == [request_]


def test_merged_passes_serve_every_request_exactly_as_run_teacher_does():
    torch.manual_seed(0)
    teacher = model_dict['resnet8'](num_classes=10).eval()
    batch = Batch(torch.randn(4, 3, 32, 32), torch.arange(4), torch.arange(4), images_strong=torch.randn(4, 3, 32, 32))
    passes = shared_passes(requests())
    assert len(passes) == 3  # plain features (with the strong view's logits), pre-ReLU, the strong view's main pass
    outputs = [run_teacher(teacher, batch, p) for p in passes]
    for request in requests():
        mine, alone = served_output(request, passes, outputs), run_teacher(teacher, batch, request)
        if alone is None:
            assert mine is None
            continue
        assert torch.equal(mine.logits, alone.logits)
        assert len(mine.feats or []) == len(alone.feats or [])
        assert all(torch.equal(a, b) for a, b in zip(mine.feats or [], alone.feats or []))
        assert mine.views.keys() == alone.views.keys()
        assert all(torch.equal(mine.views[v].logits, alone.views[v].logits) for v in mine.views)


def test_a_packs_shared_teacher_runs_every_pass_through_run_teacher(monkeypatch):
    """engine/pack.py keeps no teacher pass of its own: each merged pass is one ``run_teacher`` call."""
    import engine.pack
    torch.manual_seed(0)
    teacher = model_dict['resnet8'](num_classes=10).eval()
    batch = Batch(torch.randn(4, 3, 32, 32), torch.arange(4), torch.arange(4), images_strong=torch.randn(4, 3, 32, 32))
    calls = []
    monkeypatch.setattr(engine.pack, 'run_teacher',
                        lambda net, data, request: calls.append(request) or run_teacher(net, data, request))
    shared = engine.pack.SharedTeacher(teacher)
    shared.compute(batch, requests())
    assert calls == shared_passes(requests()) and shared.passes == 4  # three passes and the strong view's logits


def test_the_package_registers_a_plus_plus_for_each_logit_method_once_all_files_are_in():
    assert {'mkl++', 'ntce++'} <= set(DISTILLERS)
    assert all(issubclass(DISTILLERS[f'{name}++'], NDMixin) for name, cls in DISTILLERS.items()
               if name == cls.name and not cls.needs_feats and not issubclass(cls, NDMixin))

    registry = Registry('--distill')

    @registry.register('logits')
    class Logits(Distiller):
        pass

    @registry.register('maps')
    class Maps(Distiller):
        needs_feats = True

    register_plus_plus_variants(registry)
    register_plus_plus_variants(registry)  # a second call finds nothing left to add
    assert sorted(registry) == ['logits', 'logits++', 'maps']
    assert issubclass(registry['logits++'], Logits) and issubclass(registry['logits++'], NDMixin)


def test_nd_imports_no_sibling_modules_by_itself():
    source = open(distiller_zoo.ND.__file__).read()
    assert 'importlib' not in source and 'pkgutil' not in source
