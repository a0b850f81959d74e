"""MLKD and MLKD_NOAUG: the loss and its gradients against a float64 NumPy transcription of the official
forward_train (Jin-Ying/Multi-Level-Logit-Distillation's KD_ours.py; zju-SWJ/RLD's MLKD_NOAUG.py), with
logit standardisation as sunshangquan/logit-standardization-KD's MLKD.py, the paper's form, the masked
fractions by hand, the views asked for, the defaults and bad flags, and a pack equal to the single runs."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.MLKD import confidence_fractions, mlkd_loss
from helper.errors import KDZooError
from models.features import NetOutput
from test_pack import assert_same_runs, random_teacher, single_runs
from reference import log_softmax, parse, softmax

from conftest import numeric_grad, small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)

RNG = np.random.default_rng(2023)


def random_logits(n=6, c=7):
    return RNG.normal(0, 2, (n, c)), RNG.normal(0, 3, (n, c))


# ---------------------------------------------------------------------------------------------- references
def np_normalize(z):
    """logit-standardization-KD's ``normalize``: torch's std is the unbiased one."""
    return (z - z.mean(axis=1, keepdims=True)) / (1e-7 + z.std(axis=1, ddof=1, keepdims=True))


def np_kd(s, t, T, stand=False):
    if stand:
        s, t = np_normalize(s), np_normalize(t)
    p_t = softmax(t / T)
    return (p_t * (np.log(p_t) - log_softmax(s / T))).sum(axis=1).mean() * T ** 2


def np_cc(s, t, T):
    p_s, p_t = softmax(s / T), softmax(t / T)
    return ((p_t.T @ p_t - p_s.T @ p_s) ** 2).sum() / s.shape[1]


def np_bc(s, t, T):
    p_s, p_t = softmax(s / T), softmax(t / T)
    return ((p_t @ p_t.T - p_s @ p_s.T) ** 2).sum() / s.shape[0]


def official(sw, tw, T, ss=None, ts=None, stand=False):
    """KD_ours.forward_train (``ss``/``ts`` given) or MLKD_NOAUG.forward_train in NumPy, the sum of its
    loss_kd, loss_cc and loss_bc per unit KD_WEIGHT: ``(scalar loss * bool mask).mean()`` as written there,
    the strong-view KD at 2 and 6 on the weak logits, the strong cc/bc terms left out as there.
    ``stand``: logit-standardization-KD's MLKD (kd_loss only)."""
    p = softmax(tw)
    confidence = p.max(axis=1)
    mask = confidence <= np.percentile(confidence.flatten(), 50)
    per_class = p.sum(axis=0)
    class_mask = per_class <= np.percentile(per_class.flatten(), 50)
    temps = (T, 3.0, 5.0, 2.0, 6.0)
    kd = sum((np_kd(sw, tw, Tj, stand) * mask).mean() for Tj in temps)
    if ss is not None:
        kd += sum(np_kd(ss, ts, Tj, stand) for Tj in (T, 3.0, 5.0)) + sum(np_kd(sw, tw, Tj, stand) for Tj in (2.0, 6.0))
    cc = sum((np_cc(sw, tw, Tj) * class_mask).mean() for Tj in temps)
    bc = sum((np_bc(sw, tw, Tj) * mask).mean() for Tj in temps)
    return kd + cc + bc


def paper(sw, tw, T, ss=None, ts=None, stand=False):
    """The paper's form: instance + batch + class terms at the five temperatures on each view, no masks."""
    total = 0
    for s, t in [(sw, tw)] + ([(ss, ts)] if ss is not None else []):
        total += sum(np_kd(s, t, Tj, stand) + np_cc(s, t, Tj) + np_bc(s, t, Tj) for Tj in (T, 3.0, 5.0, 2.0, 6.0))
    return total


def torch_official(sw, tw, T, ss=None, ts=None, stand=False):
    """The same, op for op in float64 torch as the official functions, for the autograd gradients."""
    def normalize(z):
        return (z - z.mean(dim=-1, keepdims=True)) / (1e-7 + z.std(dim=-1, keepdims=True))

    def kd(s, t, T):
        s, t = (normalize(s), normalize(t)) if stand else (s, t)
        return F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction='none').sum(1).mean() * T ** 2

    def cc(s, t, T):
        p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        return ((torch.mm(p_t.transpose(1, 0), p_t) - torch.mm(p_s.transpose(1, 0), p_s)) ** 2).sum() / s.shape[1]

    def bc(s, t, T):
        p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        return ((torch.mm(p_t, p_t.transpose(1, 0)) - torch.mm(p_s, p_s.transpose(1, 0))) ** 2).sum() / s.shape[0]

    p = F.softmax(tw.detach(), dim=1)
    confidence = p.max(dim=1)[0]
    mask = confidence.le(float(np.percentile(confidence.numpy().flatten(), 50))).bool()
    per_class = p.sum(0)
    class_mask = per_class.le(float(np.percentile(per_class.numpy().flatten(), 50))).bool()
    temps = (T, 3.0, 5.0, 2.0, 6.0)
    total = sum((kd(sw, tw, Tj) * mask).mean() for Tj in temps)
    if ss is not None:
        total = total + sum(kd(ss, ts, Tj) for Tj in (T, 3.0, 5.0)) + sum(kd(sw, tw, Tj) for Tj in (2.0, 6.0))
    total = total + sum((cc(sw, tw, Tj) * class_mask).mean() for Tj in temps)
    return total + sum((bc(sw, tw, Tj) * mask).mean() for Tj in temps)


def value_and_grads(loss, sw, tw, T, ss=None, ts=None, **kw):
    sw = torch.tensor(sw, requires_grad=True)
    ss = None if ss is None else torch.tensor(ss, requires_grad=True)
    value = loss(sw, torch.tensor(tw), T, ss, None if ts is None else torch.tensor(ts), **kw)
    value.backward()
    return float(value.detach()), sw.grad.numpy(), None if ss is None else ss.grad.numpy()


# ---------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize('T, n', [(4.0, 4), (1.0, 5)])  # an even and an odd batch (the median's two forms)
@pytest.mark.parametrize('strong', [False, True], ids=['noaug', 'mlkd'])
@pytest.mark.parametrize('stand', [False, True], ids=['plain', 'logit_stand'])
def test_value_and_gradients_match_the_official_code(T, n, strong, stand):
    sw, tw = random_logits(n, 5)
    ss, ts = random_logits(n, 5) if strong else (None, None)
    value, grad_w, grad_s = value_and_grads(mlkd_loss, sw, tw, T, ss, ts, standardize=stand)
    assert value == pytest.approx(official(sw, tw, T, ss, ts, stand), rel=1e-12)
    ref_value, ref_w, ref_s = value_and_grads(torch_official, sw, tw, T, ss, ts, stand=stand)
    assert value == pytest.approx(ref_value, rel=1e-12)
    np.testing.assert_allclose(grad_w, ref_w, rtol=1e-10, atol=1e-14)
    if strong:
        np.testing.assert_allclose(grad_s, ref_s, rtol=1e-10, atol=1e-14)
    if not stand:  # central differences of the NumPy transcription as well (the autograd one covers stand)
        np.testing.assert_allclose(grad_w, numeric_grad(lambda x: official(x, tw, T, ss, ts), sw),
                                   rtol=1e-5, atol=1e-8)
        if strong:
            np.testing.assert_allclose(grad_s, numeric_grad(lambda x: official(sw, tw, T, x, ts), ss),
                                       rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('strong', [False, True], ids=['noaug', 'mlkd'])
@pytest.mark.parametrize('stand', [False, True], ids=['plain', 'logit_stand'])
def test_paper_form(strong, stand):
    sw, tw = random_logits(4, 5)
    ss, ts = random_logits(4, 5) if strong else (None, None)
    value, grad_w, _ = value_and_grads(mlkd_loss, sw, tw, 4.0, ss, ts, standardize=stand, paper=True)
    assert value == pytest.approx(paper(sw, tw, 4.0, ss, ts, stand), rel=1e-12)
    assert value != pytest.approx(official(sw, tw, 4.0, ss, ts, stand), rel=1e-3)
    np.testing.assert_allclose(grad_w, numeric_grad(lambda x: paper(x, tw, 4.0, ss, ts, stand), sw),
                               rtol=1e-5, atol=1e-8)


def test_masked_fractions_by_hand():
    # teacher top-1 probabilities rise with the row: 4 rows, median between rows 1 and 2 -> rows 0, 1 kept
    t = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    sample, klass = confidence_fractions(t)
    assert float(sample) == 0.5
    # class sums: class 0 the largest, classes 1 and 2 equal (the median of three): both kept
    assert float(klass) == pytest.approx(2 / 3, rel=1e-15)
    # an odd batch keeps the median row too: 2 of 3
    assert float(confidence_fractions(t[1:])[0]) == pytest.approx(2 / 3, rel=1e-15)
    # equal rows: every confidence equals the median, all kept
    assert float(confidence_fractions(torch.zeros(5, 4, dtype=torch.float64))[0]) == 1.0


def test_a_masked_term_is_the_batch_mean_times_the_fraction_not_a_per_sample_mask():
    """The code multiplies the *batch-mean* loss by the mask and averages: f * mean_i(kd_i), not mean_i(m_i kd_i)."""
    t = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])  # row 0 (the less confident) is kept: f = 1/2
    s = np.array([[0.0, 0.0, 0.0], [-4.0, 2.0, 0.0]])  # only row 1, the masked-out one, differs from the teacher
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    assert all(np_kd(s[:1], t[:1], T) == 0 for T in temps)  # so a per-sample mask would leave no KD term
    # class sums: class 0 the largest, classes 1 and 2 equal to the median: 2 of 3 kept
    rest = sum(0.5 * np_bc(s, t, T) + 2 / 3 * np_cc(s, t, T) for T in temps)
    instance = sum(0.5 * np_kd(s, t, T) for T in temps)
    assert instance > 0.1
    assert float(mlkd_loss(torch.tensor(s), torch.tensor(t), 4.0)) == pytest.approx(instance + rest, rel=1e-12)


def test_student_equal_to_teacher_gives_zero():
    sw, tw = random_logits()
    z = torch.tensor(tw)
    assert float(mlkd_loss(z, z, 4.0)) == pytest.approx(0, abs=1e-14)
    # the strong view's KD at 2 and 6 reads the weak logits: a strong student equal to its teacher leaves them
    ss, ts = random_logits()
    value = float(mlkd_loss(torch.tensor(sw), z, 4.0, torch.tensor(ts), torch.tensor(ts)))
    f = float(confidence_fractions(z)[0])
    weak_kd = sum(np_kd(sw, tw, T) for T in (2.0, 6.0))
    assert value == pytest.approx(official(sw, tw, 4.0, ts, ts), rel=1e-12)
    assert value > (1 + f) * weak_kd - 1e-12


def test_half_precision_computes_in_fp32():
    sw, tw = random_logits()
    value = mlkd_loss(torch.tensor(sw).half(), torch.tensor(tw).half(), 4.0)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(official(sw, tw, 4.0), rel=2e-2)


# ---------------------------------------------------------------------------------------------- the methods
def test_views_asked_for():
    args = parse('mlkd')
    assert DISTILLERS['mlkd'].views == ('strong',) and DISTILLERS['mlkd'].data_options(args) == {'strong_view': True}
    assert DISTILLERS['mlkd_noaug'].views == () and DISTILLERS['mlkd_noaug'].data_options(args) == {}
    for name in ('mlkd', 'mlkd_noaug'):
        assert not DISTILLERS[name].needs_feats and f'{name}++' in DISTILLERS
        method = DISTILLERS[name](parse(name), None, None, None, None, None)
        assert method.teacher_request().views == DISTILLERS[name].views


def test_defaults_per_data_set():
    for name in ('mlkd', 'MLKD_NOAUG'):
        args = parse(name)
        assert (args.gamma, args.alpha, args.beta, args.mlkd_T, args.mlkd_paper) == (0.1, 0.0, 0.9, 4.0, False)
        args = parse(name, model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
        assert (args.gamma, args.alpha, args.beta, args.mlkd_T) == (0.5, 0.0, 0.5, 1.0)
    args = parse('mlkd', '--mlkd_T', '2', '--mlkd_paper', '-b', '9')
    assert (args.mlkd_T, args.mlkd_paper, args.beta) == (2.0, True, 9.0)


@pytest.mark.parametrize('value', ['0', '-1'])
def test_bad_temperature_is_refused_in_one_line(value):
    with pytest.raises(KDZooError, match=f'^--mlkd_T must be positive, got {value}$'):
        parse('mlkd', '--mlkd_T', value)


@pytest.mark.parametrize('stand', [False, True])
def test_terms_of_the_two_methods(stand):
    """CE summed over the views for mlkd (not averaged), -b times the loss above; args.logit_stand read."""
    sw, tw = (torch.tensor(a) for a in random_logits(4, 10))
    ss, ts = (torch.tensor(a) for a in random_logits(4, 10))
    y = torch.tensor([0, 3, 9, 3])
    for name in ('mlkd', 'mlkd_noaug'):
        args = parse(name)
        args.logit_stand = stand
        method = DISTILLERS[name](args, None, None, None, None, None)
        out_s, out_t = NetOutput(sw), NetOutput(tw)
        out_s.views['strong'], out_t.views['strong'] = NetOutput(ss), NetOutput(ts)
        terms = method.losses(out_s, out_t, SimpleNamespace(targets=y), epoch=1)
        assert set(terms) == {'ce', name}
        strong = name == 'mlkd'
        ce = F.cross_entropy(sw, y) + (F.cross_entropy(ss, y) if strong else 0)
        assert float(terms['ce']) == pytest.approx(0.1 * float(ce), rel=1e-12)
        expected = official(sw.numpy(), tw.numpy(), 4.0, *((ss.numpy(), ts.numpy()) if strong else ()), stand=stand)
        assert float(terms[name]) == pytest.approx(0.9 * expected, rel=1e-12)


@pytest.mark.slow
def test_pack_of_kd_mlkd_mlkd_noaug_equals_the_single_runs(tmp_path):
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,mlkd,mlkd_noaug:mlkd_paper',
                        '--save_root', str(tmp_path / 'pack')])
    single_runs(common, [('resnet8', 'kd'), ('resnet8', 'mlkd'), ('resnet8', 'mlkd_noaug', '--mlkd_paper')],
                tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
