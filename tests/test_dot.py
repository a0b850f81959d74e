"""--dot, the Distillation-Oriented Trainer (helper/dot.py): its update against a float64 NumPy transcription of
mdistiller's engine/dot.py driven as its DOT trainer drives it, weight decay on the CE side, an exact resume
of its two momentum buffers, the one-line refusals, and a pack member with --dot equal to its single run."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_student
from engine.loop import Trainer
from helper.dot import DistillationOrientedTrainer
from helper.errors import KDZooError
from helper.schedule import sgd

from conftest import write_fake_cifar100
from test_pack import assert_same_runs, random_teacher, single_runs


# ---- the update --------------------------------------------------------------------------------------------
def official_dot(params, ce_grads, kd_grads, state, lr, m_ce, m_kd, wd):
    """mdistiller's ``dot()`` in NumPy: ``params`` {name: array}; ``ce_grads``/``kd_grads`` {name: gradient}
    for the parameters each backward reached; ``state`` {name: {'ce': buffer, 'kd': buffer}}, updated."""
    for name, g in ce_grads.items():
        d = g + wd * params[name] if wd else g
        if m_ce:
            buf = state[name].get('ce')
            if buf is None:
                buf = d.copy()
            elif name in kd_grads:
                buf = m_ce * buf + d
            else:
                buf = (m_kd + m_ce) / 2 * buf + d
            state[name]['ce'] = buf
            d = buf
        params[name] = params[name] - lr * d
    for name, g in kd_grads.items():
        buf = state[name].get('kd')
        if buf is None:
            buf = g.copy()
        elif name in ce_grads:
            buf = m_kd * buf + g
        else:
            buf = (m_kd + m_ce) / 2 * buf + (g + wd * params[name] if wd else g)
        state[name]['kd'] = buf
        params[name] = params[name] - lr * buf


def tiny_problem(seed):
    """W, b: reached by both losses; c: by CE alone; p: by KD alone (a projector)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    t = torch.randn(6, 3, generator=g, dtype=torch.float64)
    return x, y, t


def losses_of(params, x, y, t):
    w, b, c, p = params
    logits = x @ w.T + b
    ce = F.cross_entropy(logits, y) + 0.1 * (c ** 2).sum()
    log_s, log_t = F.log_softmax(logits / 2, 1), F.log_softmax(t / 2, 1)
    kd = 0.9 * 4 * F.kl_div(log_s, log_t, reduction='batchmean', log_target=True) + ((x @ p - 1) ** 2).mean()
    return {'ce': ce, 'kd': kd}


def test_update_matches_the_official_dot_over_three_steps():
    g = torch.Generator().manual_seed(0)
    shapes = dict(w=(3, 4), b=(3,), c=(2,), p=(4,))
    params = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes.values()]
    names = list(shapes)
    ref = {n: p.detach().numpy().copy() for n, p in zip(names, params)}
    state = {n: {} for n in names}
    lr, momentum, delta, wd = 0.05, 0.9, 0.075, 5e-4
    optimizer = DistillationOrientedTrainer(params, lr=lr, momentum=momentum - delta, momentum_kd=momentum + delta,
                                            weight_decay=wd)
    loop = SimpleNamespace(optimizer=optimizer, dist=SimpleNamespace(enabled=False), _params=params)
    for step in range(3):
        x, y, t = tiny_problem(step)
        # the reference's gradients: each loss alone, at the reference's own parameters
        at = [torch.tensor(ref[n], requires_grad=True) for n in names]
        losses = losses_of(at, x, y, t)
        grads = {k: dict(zip(names, torch.autograd.grad(v, at, allow_unused=True, retain_graph=True)))
                 for k, v in losses.items()}
        reached = {k: {n: gr.numpy() for n, gr in v.items() if gr is not None} for k, v in grads.items()}
        assert set(reached['ce']) == {'w', 'b', 'c'} and set(reached['kd']) == {'w', 'b', 'p'}
        official_dot(ref, reached['ce'], reached['kd'], state, lr, momentum - delta, momentum + delta, wd)
        # ours, through the training loop's two backward passes
        optimizer.zero_grad(set_to_none=True)
        Trainer.dot_step(loop, losses_of(params, x, y, t), 6)
        for n, p in zip(names, params):
            np.testing.assert_allclose(p.detach().numpy(), ref[n], rtol=1e-13, atol=1e-15, err_msg=f'{n} step {step}')
    # both buffers are optimiser state, under the names a resume restores
    saved = optimizer.state_dict()['state']
    assert {k for s in saved.values() for k in s} == {'momentum_buffer', 'momentum_kd_buffer'}
    assert 'momentum_kd_buffer' not in saved[2] and 'momentum_buffer' not in saved[3]  # c: CE only, p: KD only
    # DOT is not SGD on the summed loss: the same steps with one momentum end elsewhere
    plain = [torch.tensor(v.detach().numpy()) for v in params]
    assert not np.allclose(plain[0].numpy(), tiny_sgd(shapes, lr, momentum, wd)[0])


def tiny_sgd(shapes, lr, momentum, wd):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes.values()]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    for step in range(3):
        optimizer.zero_grad()
        sum(losses_of(params, *tiny_problem(step)).values()).backward()
        optimizer.step()
    return [p.detach().numpy() for p in params]


def test_weight_decay_joins_the_ce_gradient_only():
    """Zero gradients: a parameter both losses reach decays once (the CE side), and the second step's KD
    buffer (m_kd * 0 + 0) adds nothing; a parameter only the KD terms reach decays from the second step on."""
    both = torch.ones(1, requires_grad=True)
    kd_only = torch.ones(1, requires_grad=True)
    optimizer = DistillationOrientedTrainer([both, kd_only], lr=1.0, momentum=0.5, momentum_kd=0.7, weight_decay=0.1)
    expected_both, expected_kd = [0.9, 0.9 * 0.9 - 0.5 * 0.1], [1.0, 0.9]
    for step in range(2):
        optimizer.zero_grad(set_to_none=True)
        both.grad, kd_only.grad = torch.zeros(1), torch.zeros(1)
        optimizer.step_kd()
        optimizer.zero_grad(set_to_none=True)
        both.grad = torch.zeros(1)
        optimizer.step()
        assert both.item() == pytest.approx(expected_both[step], abs=1e-7)
        assert kd_only.item() == pytest.approx(expected_kd[step], abs=1e-7)


def test_a_step_whose_distillation_terms_are_constant_applies_the_ce_gradient_alone():
    w = torch.ones(2, requires_grad=True)
    optimizer = DistillationOrientedTrainer([w], lr=0.5, momentum=0.8, momentum_kd=0.9)
    loop = SimpleNamespace(optimizer=optimizer, dist=SimpleNamespace(enabled=False), _params=[w])
    optimizer.zero_grad(set_to_none=True)
    Trainer.dot_step(loop, {'ce': (w ** 2).sum(), 'kd': torch.zeros(())}, 1)
    assert torch.equal(w.detach(), torch.zeros(2)) and 'momentum_kd_buffer' not in optimizer.state[w]


# ---- the command line -------------------------------------------------------------------------------------
def parse(*flags, dataset='cifar100', distill='kd'):
    models = ('ResNet34', 'ResNet18') if dataset == 'imagenet' else ('vgg13', 'vgg8')
    return train_student.parse_args(['--path_t', 'teacher.pth', '--model_t', models[0], '--model_s', models[1],
                                     '--dataset', dataset, '--distill', distill, *flags])


def test_defaults_and_the_optimiser_built():
    args = parse('--dot')
    assert args.dot_delta == 0.075 and 'DOT: momentum 0.825' in args.lr_note
    assert parse('--dot', dataset='imagenet').dot_delta == 0.09
    assert not parse().dot and parse().dot_delta == 0.075  # settled either way: the folder name shows a change only
    optimizer = sgd([torch.nn.Linear(2, 2)], parse('--dot', '--dot_delta', '0.05'))
    assert isinstance(optimizer, DistillationOrientedTrainer)
    group = optimizer.param_groups[0]
    assert (group['momentum'], group['momentum_kd'], group['weight_decay']) == pytest.approx((0.85, 0.95, 5e-4))
    assert isinstance(sgd([torch.nn.Linear(2, 2)], parse()), torch.optim.SGD)
    assert train_student.run_name(parse('--dot')).endswith('_dot_0')
    assert '_dot_dot_delta:0.05_' in train_student.run_name(parse('--dot', '--dot_delta', '0.05'))


@pytest.mark.parametrize('flags, distill, says', [
    (['--dot'], 'sskd', 'two-stage'),
    (['--dot'], 'abound', 'two-stage'),
    (['--dot', '-a', '0'], 'kd', 'has none'),
    (['--dot_delta', '0.05'], 'kd', 'add --dot'),
    (['--dot', '--dot_delta', '0.1'], 'kd', 'must lie in [0, 1)'),
    (['--dot', '--dot_delta', '-0.01'], 'kd', 'cannot be negative'),
    (['--dot', '--nesterov'], 'kd', 'drop --nesterov'),
    (['--dot', '--precision', 'fp16'], 'kd', 'bf16 or fp32'),
])
def test_what_dot_cannot_train_is_one_line(flags, distill, says):
    with pytest.raises(KDZooError) as err:
        parse(*flags, distill=distill)
    assert says in str(err.value) and '\n' not in str(err.value)


# ---- runs --------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def small_cifar(tmp_path_factory):
    """60 training images in batches of 32 (two steps an epoch) and an untrained resnet8 teacher."""
    root = tmp_path_factory.mktemp('dot_cifar')
    return write_fake_cifar100(str(root / 'data'), n_train=60, n_test=20), random_teacher(root, 'resnet8', 100)


def common(small_cifar):
    data, teacher = small_cifar
    return ['--path_t', teacher, '--data_folder', data, '--batch_size', '32', '--deterministic', '--precision',
            'fp32', '--skip-validation']


def last_checkpoint(root):
    folder = root / 'students' / 'models'
    return torch.load(folder / os.listdir(folder)[0] / 'resnet8_last.pth', weights_only=True)


@pytest.mark.slow
def test_interrupted_dot_run_resumes_exactly(small_cifar, tmp_path, monkeypatch):
    argv = [*common(small_cifar), '--model_s', 'resnet8', '--distill', 'kd', '--dot', '--epochs', '2']
    whole = train_student.main([*argv, '--save_root', str(tmp_path / 'whole')])
    original_save = Trainer.save

    def crash_after_the_first_epoch(self, epoch, top1, is_best):
        original_save(self, epoch, top1, is_best)
        if epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, 'save', crash_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_student.main([*argv, '--save_root', str(tmp_path / 'parted')])
    monkeypatch.setattr(Trainer, 'save', original_save)
    parted = train_student.main([*argv, '--save_root', str(tmp_path / 'parted'), '--resume', 'auto'])
    assert parted['history'][-1]['train_loss'] == whole['history'][-1]['train_loss']
    a, b = last_checkpoint(tmp_path / 'whole'), last_checkpoint(tmp_path / 'parted')
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    kinds = {k for s in a['optimizer']['state'].values() for k in s}
    assert kinds == {'momentum_buffer', 'momentum_kd_buffer'}
    for index, entry in a['optimizer']['state'].items():
        for kind, value in entry.items():
            assert torch.equal(value, b['optimizer']['state'][index][kind]), (index, kind)


@pytest.mark.slow
def test_pack_of_kd_and_kd_dot_equals_the_single_runs(small_cifar, tmp_path):
    argv = [*common(small_cifar), '--epochs', '1']
    states = train_student.main([*argv, '--model_s', 'resnet8', '--distill', 'kd,kd:dot',
                                 '--save_root', str(tmp_path / 'pack')])
    assert sorted(states) == ['resnet8 kd', 'resnet8 kd:dot']
    single_runs(argv, [('resnet8', 'kd'), ('resnet8', 'kd', '--dot')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
    optimizers = [last_checkpoint_named(tmp_path / 'pack', dot)['optimizer'] for dot in (False, True)]
    assert 'momentum_kd_buffer' not in optimizers[0]['state'][0] and 'momentum_kd_buffer' in optimizers[1]['state'][0]


def last_checkpoint_named(root, dot):
    folder = root / 'students' / 'models'
    run = [r for r in os.listdir(folder) if r.endswith('_dot_0') == dot][0]
    return torch.load(folder / run / 'resnet8_last.pth', weights_only=True)
