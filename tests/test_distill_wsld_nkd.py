"""WSLD and NKD: each loss and its gradient against a float64 NumPy transcription of the official code
(yzd-v/cls_KD, mmcls/models/dis_losses/wsld.py and nkd.py; the authors' WSLD knowledge_distiller.py), known
values by hand, the per-data-set defaults, the bad flags, SDD-CVPR2024's all-class NKD, and a pack of both
that equals the single runs."""
import numpy as np
import pytest
import torch

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.NKD import nkd_loss
from distiller_zoo.WSLD import wsld_loss
from helper.errors import KDZooError

from test_pack import assert_same_runs, random_teacher, single_runs
from reference import log_softmax, parse, softmax

from conftest import numeric_grad, small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)

RNG = np.random.default_rng(19)


def value_and_grad(loss, s, *rest):
    s = torch.tensor(s, requires_grad=True)
    value = loss(s, *[torch.tensor(r) for r in rest[:2]], *rest[2:])
    value.backward()
    return float(value.detach()), s.grad.numpy()


def random_logits(n=6, c=7):
    """Logits with a wide spread, and labels that the teacher gets wrong on some rows."""
    s, t = RNG.normal(0, 2, (n, c)), RNG.normal(0, 3, (n, c))
    y = RNG.integers(0, c, n)
    return s, t, y


# ---------------------------------------------------------------------------------------------- WSLD

def official_wsld(s, t, y, T, weight_of=None):
    """WSLDLoss.forward (cls_KD) / WSLDistiller's soft loss (the authors' code) in NumPy, before alpha:
    soft CE at T on each row, times 1 - exp(-max(CE_s / (CE_t + 1e-7), 0)) with the plain CEs on the label,
    T^2 times the mean. ``weight_of`` gives the student logits the weight reads (the value's are detached)."""
    weight_s = s if weight_of is None else weight_of
    softmax_loss = -(softmax(t / T) * log_softmax(s / T)).sum(axis=1)
    one_hot = np.eye(s.shape[1])[y]
    ce_s = -(one_hot * log_softmax(weight_s)).sum(axis=1)
    ce_t = -(one_hot * log_softmax(t)).sum(axis=1)
    focal = 1 - np.exp(-np.maximum(ce_s / (ce_t + 1e-7), 0))
    return T ** 2 * np.mean(focal * softmax_loss)


def official_wsld_torch(s, t, y, T):
    """The same computation in float64 torch, op for op as WSLDLoss.forward, for its autograd gradient."""
    softmax_loss = -torch.sum(torch.softmax(t / T, 1) * torch.log_softmax(s / T, 1), 1, keepdim=True)
    one_hot = torch.nn.functional.one_hot(y, s.shape[1]).double()
    ce_s = -torch.sum(one_hot * torch.log_softmax(s.detach(), 1), 1, keepdim=True)
    ce_t = -torch.sum(one_hot * torch.log_softmax(t.detach(), 1), 1, keepdim=True)
    focal = 1 - torch.exp(-torch.max(ce_s / (ce_t + 1e-7), torch.zeros(1, dtype=torch.float64)))
    return T ** 2 * torch.mean(focal * softmax_loss)


@pytest.mark.parametrize('T', [4.0, 2.0, 1.0])
def test_wsld_value_and_gradient_match_the_official_code(T):
    s, t, y = random_logits()
    value, grad = value_and_grad(wsld_loss, s, t, y, T)
    assert value == pytest.approx(official_wsld(s, t, y, T), rel=1e-12)
    reference_value, reference_grad = value_and_grad(official_wsld_torch, s, t, y, T)
    assert value == pytest.approx(reference_value, rel=1e-12)
    np.testing.assert_allclose(grad, reference_grad, rtol=1e-12, atol=1e-15)
    # the weight is computed without gradient: differentiate with the weight's logits held fixed
    expected = numeric_grad(lambda x: official_wsld(x, t, y, T, weight_of=s), s)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


def test_wsld_by_hand():
    # student = teacher: each weight is 1 - e^-(CE / (CE + 1e-7)), about 1 - e^-1, and the soft CE is the
    # teacher's entropy at T
    t = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = np.array([0, 1])
    p = softmax(t / 2)
    entropy = -(p * np.log(p)).sum(axis=1)
    ce = -log_softmax(t)[[0, 1], y]
    value = wsld_loss(torch.tensor(t), torch.tensor(t), torch.tensor(y), 2.0).item()
    assert value == pytest.approx(4 * ((1 - np.exp(-ce / (ce + 1e-7))) * entropy).mean(), rel=1e-12)
    assert value == pytest.approx(4 * (1 - np.exp(-1)) * entropy.mean(), rel=1e-6)
    # a student certain of the label has CE_s ~ 0, weight ~ 0: the sample is all but dropped
    s = np.array([[60.0, 0.0, 0.0]])
    assert wsld_loss(torch.tensor(s), torch.tensor(t[:1]), torch.tensor([0]), 2.0).item() < 1e-20


def test_wsld_gradient_is_the_weighted_softmax_difference():
    """d WSLD / d s = T / B * w * (softmax(s/T) - softmax(t/T)): the weight's own dependence on s is cut."""
    s, t, y = random_logits(8, 10)
    T = 4.0
    _, grad = value_and_grad(wsld_loss, s, t, y, T)
    one_hot = np.eye(10)[y]
    ratio = (one_hot * -log_softmax(s)).sum(1) / ((one_hot * -log_softmax(t)).sum(1) + 1e-7)
    w = (1 - np.exp(-ratio))[:, None]
    np.testing.assert_allclose(grad, T / 8 * w * (softmax(s / T) - softmax(t / T)), rtol=1e-10, atol=1e-14)


def test_wsld_under_half_precision_computes_in_fp32():
    s, t, y = random_logits()
    value = wsld_loss(torch.tensor(s).half(), torch.tensor(t).half(), torch.tensor(y), 4.0)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(official_wsld(s, t, y, 4.0), rel=1e-2)


# ---------------------------------------------------------------------------------------------- NKD

def official_nkd(s, t, y, T, gamma, all_classes=False):
    """NKDLoss.forward of cls_KD in NumPy: the target term at T = 1 (teacher probability detached), then the
    rows with the label's column removed by a boolean mask and reshaped (cls_KD's form), or every column
    (``scatter_(1, label, 1)``, SDD-CVPR2024's port), softened by T and weighted by gamma * T^2."""
    n, c = s.shape
    rows = np.arange(n)
    loss_t = -(softmax(t)[rows, y] * log_softmax(s)[rows, y]).mean()
    mask = np.ones((n, c), bool)
    if not all_classes:
        mask[rows, y] = False
    s_non, t_non = s[mask].reshape(n, -1), t[mask].reshape(n, -1)
    loss_non = (softmax(t_non / T) * log_softmax(s_non / T)).sum(axis=1).mean()
    return loss_t - gamma * T ** 2 * loss_non


def official_nkd_torch(s, t, y, T, gamma, all_classes=False):
    """The same computation in float64 torch, op for op as NKDLoss.forward, for its autograd gradient."""
    n = s.shape[0]
    label = y.view(n, 1)
    s_t = torch.gather(torch.log_softmax(s, 1), 1, label)
    t_t = torch.gather(torch.softmax(t, 1), 1, label).detach()
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(s).scatter_(1, label, 1 if all_classes else 0).bool()
    s_non, t_non = s[mask].reshape(n, -1), t[mask].reshape(n, -1)
    loss_non = (torch.softmax(t_non / T, 1) * torch.log_softmax(s_non / T, 1)).sum(1).mean()
    return loss_t - gamma * T ** 2 * loss_non


@pytest.mark.parametrize('T, gamma', [(3.0, 3.5), (1.0, 1.5), (2.0, 0.0)])
@pytest.mark.parametrize('all_classes', [False, True])
def test_nkd_value_and_gradient_match_the_official_code(T, gamma, all_classes):
    s, t, y = random_logits()
    value, grad = value_and_grad(nkd_loss, s, t, y, T, gamma, all_classes)
    assert value == pytest.approx(official_nkd(s, t, y, T, gamma, all_classes), rel=1e-12)
    reference_value, reference_grad = value_and_grad(official_nkd_torch, s, t, y, T, gamma, all_classes)
    assert value == pytest.approx(reference_value, rel=1e-12)
    np.testing.assert_allclose(grad, reference_grad, rtol=1e-12, atol=1e-15)
    expected = numeric_grad(lambda x: official_nkd(x, t, y, T, gamma, all_classes), s)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


def test_nkd_by_hand():
    # two classes: no other non-target class, so the non-target term is -1 * log 1 = 0
    s, t = np.array([[1.0, -1.0]]), np.array([[0.0, 2.0]])
    value = nkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor([0]), 3.0, 3.5).item()
    p_t, p_s = softmax(t)[0, 0], softmax(s)[0, 0]
    assert value == pytest.approx(-p_t * np.log(p_s), rel=1e-12)
    # student = teacher: the non-target term is the entropy of the teacher's normalised non-target distribution
    t = np.array([[3.0, 1.0, 0.0, -1.0]])
    q = softmax(t[:, 1:] / 2)
    expected = -softmax(t)[0, 0] * log_softmax(t)[0, 0] + 1.5 * 4 * -(q * np.log(q)).sum()
    assert nkd_loss(torch.tensor(t), torch.tensor(t), torch.tensor([0]), 2.0, 1.5).item() == \
        pytest.approx(expected, rel=1e-12)


def test_nkd_non_target_term_ignores_the_target_logit():
    """With the target removed, moving the target logit of either network changes only the target term."""
    s, t, y = random_logits()
    moved_s, moved_t = s.copy(), t.copy()
    moved_s[np.arange(len(y)), y] += 5
    moved_t[np.arange(len(y)), y] -= 5
    nothing = nkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), 3.0, 0.0)
    both = nkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), 3.0, 3.5)
    nothing_moved = nkd_loss(torch.tensor(moved_s), torch.tensor(moved_t), torch.tensor(y), 3.0, 0.0)
    both_moved = nkd_loss(torch.tensor(moved_s), torch.tensor(moved_t), torch.tensor(y), 3.0, 3.5)
    assert float(both - nothing) == pytest.approx(float(both_moved - nothing_moved), rel=1e-12)


def test_nkd_under_half_precision_computes_in_fp32():
    s, t, y = random_logits()
    value = nkd_loss(torch.tensor(s).half(), torch.tensor(t).half(), torch.tensor(y), 3.0, 3.5)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(official_nkd(s, t, y, 3.0, 3.5), rel=1e-2)


# ---------------------------------------------------------------------------------------------- defaults

def test_defaults_per_data_set():
    args = parse('wsld')
    assert (args.gamma, args.alpha, args.beta, args.wsld_T) == (1.0, 0.0, 2.25, 4.0)
    args = parse('wsld', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert (args.gamma, args.alpha, args.beta, args.wsld_T) == (1.0, 0.0, 2.5, 2.0)
    args = parse('nkd')
    assert (args.gamma, args.alpha, args.beta, args.nkd_T, args.nkd_gamma) == (1.0, 0.0, 1.0, 3.0, 3.5)
    assert not args.nkd_all_classes
    args = parse('nkd', model_t='ResNet50', model_s='MobileNetV1', dataset='imagenet')
    assert (args.gamma, args.alpha, args.beta, args.nkd_T, args.nkd_gamma) == (1.0, 0.0, 1.0, 1.0, 1.5)
    args = parse('nkd', '--nkd_T', '1', '--nkd_gamma', '1.5', '--nkd_all_classes', '-b', '2')
    assert (args.beta, args.nkd_T, args.nkd_gamma, args.nkd_all_classes) == (2.0, 1.0, 1.5, True)
    assert parse('WSLD', '--wsld_T', '2', '-b', '1').wsld_T == 2.0


@pytest.mark.parametrize('name, flags, message', [
    ('wsld', ['--wsld_T', '0'], '--wsld_T must be positive'),
    ('wsld', ['--wsld_T', '-2'], '--wsld_T must be positive'),
    ('nkd', ['--nkd_T', '0'], '--nkd_T must be positive'),
    ('nkd', ['--nkd_gamma', '-1'], '--nkd_gamma cannot be negative'),
])
def test_undefined_settings_are_refused(name, flags, message):
    with pytest.raises(KDZooError, match=message):
        parse(name, *flags)


def test_the_methods_read_the_logits_alone():
    for name in ('wsld', 'nkd'):
        assert not DISTILLERS[name].needs_feats and f'{name}++' in DISTILLERS


def test_a_method_term_is_the_weighted_loss(tmp_path):
    """-b scales the loss the functions above compute; CE is the plain cross-entropy."""
    from types import SimpleNamespace

    from models.features import NetOutput
    s, t, y = (torch.tensor(a) for a in random_logits(4, 100))
    for name, flags, loss in (('wsld', [], lambda: 2.25 * wsld_loss(s, t, y, 4.0)),
                              ('nkd', ['--nkd_all_classes'], lambda: nkd_loss(s, t, y, 3.0, 3.5, True))):
        args = parse(name, *flags)
        method = DISTILLERS[name](args, None, None, None, None, None)
        terms = method.losses(NetOutput(s), NetOutput(t), SimpleNamespace(targets=y), epoch=1)
        assert set(terms) == {'ce', name}
        assert torch.equal(terms[name], loss())
        assert terms['ce'] == torch.nn.functional.cross_entropy(s, y)


@pytest.mark.slow
def test_pack_of_kd_wsld_nkd_equals_the_single_runs(tmp_path):
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,wsld,nkd:nkd_all_classes',
                        '--save_root', str(tmp_path / 'pack')])
    single_runs(common, [('resnet8', 'kd'), ('resnet8', 'wsld'), ('resnet8', 'nkd', '--nkd_all_classes')],
                tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
