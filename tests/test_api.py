"""The Python API: a Distiller for one's own loop, with the command line's defaults."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo import build_distiller, run_teacher
from distiller_zoo.base import kd_loss
from helper.errors import KDZooError
from models import model_dict


def pair(student='resnet8', teacher='resnet20', classes=10):
    torch.manual_seed(0)
    return model_dict[student](num_classes=classes), model_dict[teacher](num_classes=classes)


def batch_of(n, classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return SimpleNamespace(images=torch.randn(n, 3, 32, 32, generator=gen),
                           targets=torch.randint(0, classes, (n,), generator=gen),
                           indices=torch.arange(n), contrast_idx=None)


def test_kd_from_the_api_computes_the_published_composition():
    student, teacher = pair()
    method = build_distiller('kd', student, teacher)
    assert (method.gamma, method.alpha, method.beta) == (0.1, 0.9, 0.0)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    batch = batch_of(8)
    out_t = run_teacher(teacher, batch, method.teacher_request())
    logits, losses = method.forward_train(student, batch, out_t, epoch=1)
    with torch.no_grad():
        expected_logits, logits_t = student(batch.images), teacher(batch.images)
    assert torch.allclose(logits, expected_logits)
    assert torch.allclose(losses['ce'], 0.1 * F.cross_entropy(expected_logits, batch.targets))
    assert torch.allclose(losses['kd'], 0.9 * kd_loss(expected_logits, logits_t, 4.0))


def test_the_api_settles_per_pair_defaults_as_the_command_line_does():
    student, teacher = pair('resnet20', 'resnet56', classes=100)
    method = build_distiller('DKD', student, teacher, model_s='resnet20', model_t='resnet56')
    args = train_student.parse_args(['--path_t', 't.pth', '--model_t', 'resnet56', '--model_s', 'resnet20',
                                     '--distill', 'dkd'])
    assert (method.gamma, method.alpha, method.beta) == (args.gamma, args.alpha, args.beta)
    assert (method.dkd_alpha, method.dkd_beta, method.temperature, method.warmup) == \
        (args.dkd_alpha, args.dkd_beta, args.dkd_T, args.dkd_warmup)
    given = build_distiller('dkd', student, teacher, model_s='resnet20', model_t='resnet56', dkd_beta=3.0, beta=2.0)
    assert (given.dkd_beta, given.beta) == (3.0, 2.0)


def test_a_feature_method_with_a_memory_bank_trains_in_a_plain_loop():
    student, teacher = pair()
    method = build_distiller('crd', student, teacher, num_train=16, nce_k=8, feat_dim=16)
    assert method.criterion.contrast.memory_v1.shape[0] == 16
    optimizer = torch.optim.SGD([*student.parameters(), *method.parameters()], lr=0.05, momentum=0.9)
    batch = batch_of(16)
    batch.contrast_idx = torch.randint(0, 16, (16, 9), generator=torch.Generator().manual_seed(1))
    batch.contrast_idx[:, 0] = batch.indices
    teacher_before = [p.clone() for p in teacher.parameters()]
    totals = []
    for _ in range(4):
        out_t = run_teacher(teacher, batch, method.teacher_request())
        _, losses = method.forward_train(student, batch, out_t, epoch=1)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < totals[0]
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))


def test_unknown_methods_and_flags_are_one_line_errors_with_a_suggestion():
    student, teacher = pair()
    with pytest.raises(KDZooError, match="unknown method 'simdk' \\(did you mean simkd"):
        build_distiller('simdk', student, teacher)
    with pytest.raises(KDZooError, match="unknown flag 'nce_kk' \\(did you mean nce_k"):
        build_distiller('crd', student, teacher, num_train=16, nce_kk=8)
    with pytest.raises(KDZooError, match='-b cannot be negative'):
        build_distiller('kd', student, teacher, beta=-1.0)
