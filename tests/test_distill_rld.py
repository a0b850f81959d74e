"""RLD against a float64 transcription of the official rld_loss (zju-SWJ/RLD mdistiller/distillers/RLD.py):
values and gradients, with and without logit standardisation and at the masking's edge cases; hand-computed
values; the warm-up; the configs' defaults and the user errors."""
import math

import pytest
import torch

import train_student
from distiller_zoo.RLD import rld_loss, rld_parts
from helper.errors import KDZooError

from conftest import small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)


def official(s, t, y, alpha, beta, T, alpha_T, stand):
    """The official computation step by step: optional z-scoring, the binary SCD at alpha_T (student at the label,
    teacher at its arg-max, log of the summed probabilities), the MCD at T over the classes the teacher ranks
    below the label (the others filled with -1e9), both KL(teacher || student) summed and divided by the batch."""
    if stand:
        s = (s - s.mean(-1, keepdim=True)) / (1e-7 + s.std(-1, keepdim=True))
        t = (t - t.mean(-1, keepdim=True)) / (1e-7 + t.std(-1, keepdim=True))
    n, c = s.shape
    at_label = torch.zeros(n, c, dtype=torch.bool)
    at_label[torch.arange(n), y] = True
    at_top = torch.zeros(n, c, dtype=torch.bool)
    at_top[torch.arange(n), t.argmax(1)] = True
    ps, pt = torch.softmax(s / alpha_T, 1), torch.softmax(t / alpha_T, 1)
    bs = torch.stack([(ps * at_label).sum(1), (ps * ~at_label).sum(1)], 1)
    bt = torch.stack([(pt * at_top).sum(1), (pt * ~at_top).sum(1)], 1)
    scd = (torch.xlogy(bt, bt) - bt * torch.log(bs)).sum() / n * alpha_T ** 2
    drop = t >= t[torch.arange(n), y].unsqueeze(1)
    ls = torch.log_softmax((s / T).masked_fill(drop, -1e9), 1)
    mt = torch.softmax((t / T).masked_fill(drop, -1e9), 1)
    mcd = (torch.xlogy(mt, mt) - mt * ls).sum() / n * T ** 2
    return alpha * scd + beta * mcd


def case(seed, n=16, c=100, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    y[0] = t[0].argmax()  # the teacher is right: only the label is left out of MCD
    y[1] = t[1].argmin()  # the label is the teacher's lowest class: nothing is left, MCD is 0
    return s.requires_grad_(), t.requires_grad_(), y


@pytest.mark.parametrize('stand', [False, True])
@pytest.mark.parametrize('alpha, beta, T, alpha_T', [(1.0, 8.0, 4.0, 4.0), (1.0, 8.0, 4.0, 1.0),
                                                     (0.5, 2.0, 1.0, 1.0), (9.0, 72.0, 2.0, 2.0)])
def test_value_and_gradients_match_the_official_loss(stand, alpha, beta, T, alpha_T):
    for seed in range(3):
        s, t, y = case(seed)
        ours = rld_loss(s, t, y, alpha, beta, T, alpha_T, stand)
        ref = official(s, t, y, alpha, beta, T, alpha_T, stand)
        assert ours.dtype == torch.float64
        assert abs(ours.item() - ref.item()) < 1e-12 * max(1.0, abs(ref.item()))
        # the student's gradient only: the official teacher runs under no_grad (and its transcription's gradient
        # in the teacher is NaN wherever a masked probability is 0)
        g_ours, = torch.autograd.grad(ours, s)
        g_ref, = torch.autograd.grad(ref, s)
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-13)
        assert torch.isfinite(torch.autograd.grad(rld_loss(s, t, y, alpha, beta, T, alpha_T, stand), t)[0]).all()


def test_parts_at_the_masking_edges():
    s, t, y = case(3)
    scd, mcd = rld_parts(s, t, y, 4.0, 4.0)
    assert mcd[1].item() == 0.0 and mcd[0].item() > 0  # nothing below the teacher's lowest class
    assert torch.autograd.grad(mcd[1], s, allow_unused=True)[0].abs().max() == 0
    assert bool((scd >= -1e-15).all()) and bool((mcd >= -1e-15).all())


def test_hand_computed_values():
    # identical logits whose arg-max is the label: both binary distributions and both masked ones agree
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    assert rld_loss(z, z, torch.tensor([0]), 1.0, 8.0, 4.0, 4.0).item() == pytest.approx(0, abs=1e-15)
    # identical logits, label not the arg-max: MCD is 0 but SCD compares the label's mass with the top class's
    y = torch.tensor([1])
    p = torch.softmax(z[0], 0)
    p1, p0 = p[1].item(), p[0].item()
    scd = p0 * math.log(p0 / p1) + (1 - p0) * math.log((1 - p0) / (1 - p1))
    assert rld_loss(z, z, y, 1.0, 8.0, 4.0, 1.0).item() == pytest.approx(scd, rel=1e-13)
    # a teacher that ranks two classes below the label: MCD is a two-class KL at T 1, times beta
    s = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[5.0, 4.0, math.log(2.0), 0.0]], dtype=torch.float64)
    _, mcd = rld_parts(s, t, torch.tensor([1]), 1.0, 1.0)
    q = (math.e / (math.e + 1), 1 / (math.e + 1))
    assert mcd.item() == pytest.approx(2 / 3 * math.log(2 / 3 / q[0]) + 1 / 3 * math.log(1 / 3 / q[1]), rel=1e-13)


def test_fp16_logits_give_an_fp32_loss():
    s, t, y = case(4)
    out = rld_loss(s.detach().half(), t.detach().half(), y, 1.0, 8.0, 4.0, 4.0)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def parse(*flags, model_t='vgg13', model_s='vgg8', dataset='cifar100'):
    return train_student.parse_args(['--path_t', f'{model_t}.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--dataset', dataset, '--distill', 'rld', *flags])


def settings(args):
    return (args.gamma, args.alpha, args.beta, args.rld_alpha, args.rld_beta, args.rld_T, args.rld_alpha_T,
            args.rld_warmup)


def test_defaults_are_the_official_configs():
    assert settings(parse()) == (1.0, 0.0, 1.0, 1.0, 8.0, 4.0, 4.0, 20)
    assert settings(parse(model_t='resnet56', model_s='resnet20')) == (1.0, 0.0, 1.0, 1.0, 8.0, 4.0, 4.0, 20)
    assert settings(parse('--rld_alpha_T', '1')) == (1.0, 0.0, 1.0, 1.0, 8.0, 4.0, 1.0, 20)
    assert settings(parse('--rld_T', '3')) == (1.0, 0.0, 1.0, 1.0, 8.0, 3.0, 3.0, 20)
    imagenet = dict(dataset='imagenet')
    assert settings(parse(model_t='ResNet34', model_s='ResNet18', **imagenet)) == (1, 0, 1, 1, 0.5, 1, 1, 1)
    assert settings(parse(model_t='ResNet50', model_s='MobileNetV1', **imagenet)) == (1, 0, 1, 1, 2, 1, 1, 1)
    # --rld_logit_stand, its first name here, is LS's --logit_stand (distiller_zoo/logit_stand.py)
    for switch in ('--rld_logit_stand', '--logit_stand', '--logit-stand'):
        args = parse(switch)
        assert settings(args) == (1.0, 0.0, 1.0, 9.0, 72.0, 2.0, 2.0, 20) and args.logit_stand
    assert settings(parse('--rld_logit_stand', '--rld_beta', '10'))[4] == 10.0


def test_the_term_ramps_in_over_20_epochs():
    args = parse()
    from distiller_zoo import DISTILLERS
    method = DISTILLERS['rld'](args, None, None, None, None, None)
    assert [method.ramp(epoch) for epoch in (1, 10, 20, 30)] == [0.05, 0.5, 1.0, 1.0]


@pytest.mark.parametrize('flags, message', [
    (('--rld_alpha', '-1'), '--rld_alpha cannot be negative'), (('--rld_beta', '-1'), '--rld_beta cannot be negative'),
    (('--rld_T', '0'), '--rld_T must be positive'), (('--rld_alpha_T', '0'), '--rld_alpha_T must be positive'),
    (('--rld_warmup', '-1'), '--rld_warmup cannot be negative')])
def test_bad_values_are_refused(flags, message):
    with pytest.raises(KDZooError, match=message):
        parse(*flags)


@pytest.mark.slow
def test_a_pack_of_kd_ttm_wttm_rld_equals_the_single_runs(tmp_path):
    """The three logit methods of this file and test_distill_ttm.py, packed with KD on digits, end bit-identical
    to their single runs (checkpoints, metrics, run folders), as tests/test_pack.py checks other packs."""
    from test_pack import assert_same_runs, random_teacher, single_runs
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    states = train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,ttm,wttm,rld',
                                 '--save_root', str(tmp_path / 'pack')])
    assert sorted(states) == ['resnet8 kd', 'resnet8 rld', 'resnet8 ttm', 'resnet8 wttm']
    single_runs(common, [('resnet8', m) for m in ('kd', 'ttm', 'wttm', 'rld')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
