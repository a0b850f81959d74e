"""TTM and WTTM against a float64 transcription of the official criteria (zkxufo/TTM distiller_zoo/ttm.py,
wttm.py): values and gradients, hand-computed values, the README defaults and the user errors."""
import math

import pytest
import torch

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.TTM import TTMLoss, ttm_loss, wttm_loss
from distiller_zoo.base import kd_loss
from helper.errors import KDZooError


def official(y_s, y_t, l, weighted):  # noqa: E741
    """The official forward, step by step: the teacher's softmax raised to l and renormalised, the KL of the
    student's plain log-softmax to it summed over classes, then the batch mean (times the power sum for WTTM)."""
    log_q = y_s - torch.logsumexp(y_s, dim=1, keepdim=True)
    powered = (torch.exp(y_t) / torch.exp(y_t).sum(1, keepdim=True)) ** l
    total = powered.sum(1)
    target = powered / total[:, None]
    kl = (torch.xlogy(target, target) - target * log_q).sum(1)
    return (total * kl).mean() if weighted else kl.mean()


def logits(seed, batch=16, classes=100, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    y_s = (torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale).requires_grad_()
    y_t = (torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale).requires_grad_()
    return y_s, y_t


@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('l', [0.1, 0.2, 0.5, 1.0, 2.0])
def test_value_and_gradients_match_the_official_criterion(weighted, l):  # noqa: E741
    for seed in range(3):
        y_s, y_t = logits(seed)
        ours = TTMLoss(l, weighted)(y_s, y_t)
        ref = official(y_s, y_t, l, weighted)
        assert ours.dtype == torch.float64
        assert abs(ours.item() - ref.item()) < 1e-12 * max(1.0, abs(ref.item()))
        g_ours = torch.autograd.grad(ours, (y_s, y_t))
        g_ref = torch.autograd.grad(ref, (y_s, y_t))
        for a, b in zip(g_ours, g_ref):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_hand_computed_values():
    # identical logits with l = 1: the target is the student's own softmax, so TTM and WTTM are 0 (U = 1)
    z = torch.randn(4, 10, dtype=torch.float64)
    assert ttm_loss(z, z, 1.0).item() == pytest.approx(0, abs=1e-14)
    assert wttm_loss(z, z, 1.0).item() == pytest.approx(0, abs=1e-14)
    # a uniform teacher stays uniform under any power, so TTM = KL(uniform || q) whatever l, and WTTM is that
    # times U = C * (1/C)^l
    y_s = torch.tensor([[math.log(3.0), 0.0, 0.0]], dtype=torch.float64)  # q = (3/5, 1/5, 1/5)
    y_t = torch.zeros(1, 3, dtype=torch.float64)
    kl = sum(1 / 3 * math.log((1 / 3) / q) for q in (0.6, 0.2, 0.2))
    assert ttm_loss(y_s, y_t, 0.3).item() == pytest.approx(kl, rel=1e-13)
    assert wttm_loss(y_s, y_t, 0.3).item() == pytest.approx(3 * (1 / 3) ** 0.3 * kl, rel=1e-13)


def test_ttm_is_kd_with_an_untempered_student():
    """p^l / sum p^l = softmax(l * z_t): TTM at l = 1/T is KD's KL with T on the teacher's side only."""
    y_s, y_t = logits(5)
    T = 4.0
    kd_student_at_one = kd_loss(y_s, y_t / T, 1.0)
    assert abs(ttm_loss(y_s, y_t, 1 / T).item() - kd_student_at_one.item()) < 1e-6  # kd_loss runs in fp32


def test_fp16_logits_give_an_fp32_loss():
    y_s, y_t = logits(6)
    for fn in (ttm_loss, wttm_loss):
        out = fn(y_s.detach().half(), y_t.detach().half(), 0.1)
        assert out.dtype == torch.float32 and torch.isfinite(out)


def parse(name, *flags, dataset='cifar100'):
    return train_student.parse_args(['--path_t', 'vgg13.pth', '--model_t', 'vgg13', '--model_s', 'vgg8',
                                     '--dataset', dataset, '--distill', name, *flags])


def test_defaults_are_the_readme_commands():
    args = parse('ttm')
    assert (args.gamma, args.alpha, args.beta, args.ttm_l) == (1.0, 0.0, 45.0, 0.1)
    args = parse('wttm')
    assert (args.gamma, args.alpha, args.beta, args.ttm_l) == (1.0, 0.0, 4.0, 0.2)
    args = parse('wttm', '--ttm_l', '0.5', '-b', '2')
    assert (args.beta, args.ttm_l) == (2.0, 0.5)
    assert DISTILLERS['ttm'].weighted is False and DISTILLERS['wttm'].weighted is True


@pytest.mark.parametrize('name', ['ttm', 'wttm'])
@pytest.mark.parametrize('value', ['0', '-0.5'])
def test_a_power_that_is_not_positive_is_refused(name, value):
    with pytest.raises(KDZooError, match='--ttm_l must be positive'):
        parse(name, '--ttm_l', value)
