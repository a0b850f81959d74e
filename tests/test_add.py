"""--add (distiller_zoo/add.py): the TTM repo's second loss in the alpha slot. Its README's command lines parse
as written, the added term is the official criterion (float64 transcription of zkxufo/TTM's WTTM, value and
gradient) weighed by -a, -a has a default, and what cannot be added is refused in one line."""
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo import DISTILLERS, Distiller, build_distiller, run_teacher
from distiller_zoo.DKD import dkd_loss
from helper.errors import KDZooError
from models import model_dict

from conftest import write_fake_cifar100
from test_distill_ttm import official
from test_pack import random_teacher

README_TTM = ['--path_t', './save/models/vgg13_vanilla/ckpt_epoch_240.pth', '--model_s', 'vgg8', '--distill', 'ttm',
              '--ttm_l', '0.1', '-r', '1', '-b', '45', '-a', '0', '--trial', '1']
README_CRD_WTTM = ['--path_t', './save/models/vgg13_vanilla/ckpt_epoch_240.pth', '--model_s', 'vgg8', '--distill',
                   'crd', '--add', 'wttm', '--ttm_l', '0.2', '-b', '0.8', '-a', '4', '--trial', '1']


def parse(*flags):
    return train_student.parse_args(['--path_t', 'vgg13.pth', '--model_t', 'vgg13', '--model_s', 'vgg8', *flags])


def test_the_readme_command_lines_parse_as_written():
    args = train_student.parse_args(README_TTM)
    assert (args.distill, args.add, args.gamma, args.alpha, args.beta, args.ttm_l) == ('ttm', 'kd', 1, 0, 45, 0.1)
    assert args.model_t == 'vgg13'
    args = train_student.parse_args(README_CRD_WTTM)
    assert (args.distill, args.add, args.gamma, args.alpha, args.beta, args.ttm_l) == ('crd', 'wttm', 1, 4, 0.8, 0.2)
    assert 'wttm (--add) 4' in args.weights_note
    assert '_add:wttm_ttm_l:0.2_' in train_student.run_name(args)  # not the folder of plain crd
    assert '_add' not in train_student.run_name(parse('--distill', 'crd'))


def test_defaults_without_a():
    """The official script stops unless -a is given (opt.alpha is None); here -a has a default: the -distill
    method's own without --add (TTM's 0), the added method's own weight with it (WTTM's 4, the README's)."""
    assert parse('--distill', 'ttm', '-r', '1', '-b', '45').alpha == 0
    args = parse('--distill', 'crd', '--add', 'wttm')
    assert (args.alpha, args.ttm_l) == (4.0, 0.2) and 'alpha from the wttm defaults' in args.weights_note
    assert parse('--distill', 'kd', '--add', 'ttm').alpha == 45.0
    assert parse('--distill', 'dist', '--add', 'KD').add == 'kd'  # the official default, any case


def pair(classes=10):
    torch.manual_seed(0)
    return model_dict['resnet8'](num_classes=classes), model_dict['resnet14'](num_classes=classes)


def batch_of(n, classes=10):
    gen = torch.Generator().manual_seed(1)
    return SimpleNamespace(images=torch.randn(n, 3, 32, 32, generator=gen),
                           targets=torch.randint(0, classes, (n,), generator=gen), indices=torch.arange(n),
                           contrast_idx=None)


def test_the_added_term_is_the_official_wttm_in_the_alpha_slot():
    student, teacher = pair()
    method = build_distiller('dist', student, teacher, add='wttm', alpha=4.0)
    assert method.added.name == 'wttm' and method.added.power == 0.2
    batch = batch_of(6)
    out_t = run_teacher(teacher, batch, method.teacher_request())
    logits, losses = method.forward_train(student, batch, out_t, epoch=1)
    assert sorted(losses) == ['add_wttm', 'ce', 'dist']
    y_s = logits.detach().double().requires_grad_()
    ref = 4.0 * official(y_s, out_t.logits.double(), 0.2, weighted=True)
    assert losses['add_wttm'].item() == pytest.approx(ref.item(), rel=1e-5)
    ours, = torch.autograd.grad(losses['add_wttm'], logits, retain_graph=True)
    theirs, = torch.autograd.grad(ref, y_s)
    assert torch.allclose(ours.double(), theirs, rtol=1e-4, atol=1e-7)
    # --add kd is the composition every method already has
    plain = build_distiller('dist', student, teacher, add='kd', alpha=4.0)
    assert plain.added is None and 'kd' in plain.forward_train(student, batch, out_t, epoch=1)[1]


def test_wttm_added_to_itrd_as_the_ttm_papers_wttm_itrd_row():
    """scripts/run_logit_tables.sh's wttm+itrd cell (ResNet50 -> vgg8's settings): ITRD's term weighed by -b 1
    with A.5's lambdas, WTTM in the alpha slot at the pair's gamma and beta."""
    args = parse('--distill', 'itrd', '--add', 'wttm', '-b', '1', '--lambda_corr', '2', '--ttm_l', '0.1', '-a', '1',
                 '--lambda_mutual', '0', '--alpha_it', '1.5')
    assert (args.distill, args.add, args.alpha, args.beta, args.ttm_l, args.lambda_mutual) == \
        ('itrd', 'wttm', 1, 1, 0.1, 0)
    student, teacher = pair()
    method = build_distiller('itrd', student, teacher, add='wttm', alpha=0.5, ttm_l=0.1, lambda_mutual=0.0)
    assert method.added.name == 'wttm' and method.added.power == 0.1 and method.lambda_mutual == 0
    batch = batch_of(6)
    out_t = run_teacher(teacher, batch, method.teacher_request())
    logits, losses = method.forward_train(student, batch, out_t, epoch=1)
    assert sorted(losses) == ['add_wttm', 'ce', 'itrd']
    ref = 0.5 * official(logits.detach().double(), out_t.logits.double(), 0.1, weighted=True)
    assert losses['add_wttm'].item() == pytest.approx(ref.item(), rel=1e-5)


def test_an_added_method_brings_its_labels_flags_and_warm_up():
    student, teacher = pair()
    method = build_distiller('kd', student, teacher, add='dkd', alpha=2.0, dkd_warmup=4)
    batch = batch_of(5)
    out_t = run_teacher(teacher, batch, method.teacher_request())
    logits, losses = method.forward_train(student, batch, out_t, epoch=1)
    added = method.added
    expected = 2.0 * 0.25 * dkd_loss(logits, out_t.logits, batch.targets, added.dkd_alpha, added.dkd_beta,
                                     added.temperature)
    assert losses['add_dkd'].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses['ce'].item() == pytest.approx(0.1 * F.cross_entropy(logits, batch.targets).item(), rel=1e-6)


@pytest.mark.parametrize('flags, says', [
    (['--distill', 'kd', '--add', 'crd'], 'reads more than the two networks'),
    (['--distill', 'kd', '--add', 'ntce'], 'reads more than the two networks'),
    (['--distill', 'kd', '--add', 'kd++'], 'reads more than the two networks'),
    (['--distill', 'kd', '--add', 'abound'], 'reads more than the two networks'),
    (['--distill', 'crd', '--add', 'wttm', '-a', '0'], 'weighed by -a, which is 0'),
    (['--distill', 'crd', '--add', 'wtm'], "unknown --add 'wtm'"),
])
def test_what_cannot_be_added_is_one_line(flags, says):
    with pytest.raises(KDZooError) as err:
        parse(*flags)
    assert says in str(err.value) and '\n' not in str(err.value)


def test_a_logit_method_with_its_own_step_cannot_be_added():
    class OwnStep(Distiller):
        def losses(self, out_s, out_t, batch, epoch):
            return {}
    assert 'composes its own training step (losses)' in OwnStep.add_refusal()
    assert DISTILLERS['wttm'].add_refusal() is None and DISTILLERS['dkd'].add_refusal() is None


@pytest.mark.slow
def test_the_readme_combination_trains(tmp_path):
    """--distill crd --add wttm as the README writes it, one epoch on 60 fake CIFAR-100 images."""
    data = write_fake_cifar100(str(tmp_path / 'data'), n_train=60, n_test=20)
    teacher = random_teacher(tmp_path, 'vgg13', 100)
    argv = [a for a in README_CRD_WTTM if a not in ('--path_t', './save/models/vgg13_vanilla/ckpt_epoch_240.pth')]
    state = train_student.main([*argv, '--path_t', teacher, '--data_folder', data, '--batch_size', '32',
                                '--epochs', '1', '--nce_k', '16', '--skip-validation', '--precision', 'fp32',
                                '--save_root', str(tmp_path / 'save')])
    assert {'train_ce', 'train_add_wttm', 'train_crd'} <= set(state['history'][-1])
    assert 'train_kd' not in state['history'][-1]
    runs = os.listdir(tmp_path / 'save' / 'students' / 'models')
    assert runs == ['S:vgg8_T:vgg13_cifar100_crd_r:1_a:4_b:0.8_nce_k:16_add:wttm_ttm_l:0.2_1']
