"""LS (--logit_stand) and CTKD (--distill ctkd) against float64 transcriptions of their official code:
LS's KD and DKD losses (sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py and DKD.py), CTKD's
temperature through its gradient reversal layer and its curriculum (zhengli97/CTKD, models/temp_global.py,
train_student.py's CosineDecay and LinearDecay), the defaults of both, the one-line errors, an exact resume
of a ctkd run and a pack of kd, kd with LS and ctkd against their single runs."""
import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo import DISTILLERS, build_distiller
from distiller_zoo.CTKD import GlobalTemperature, curriculum_lambda
from distiller_zoo.logit_stand import standardize
from helper.errors import KDZooError
from models import model_dict

from conftest import first_digits


# ---- float64 transcriptions of the official code ---------------------------------------------------------

def official_normalize(logit):
    """LS's ``normalize`` (KD.py, DKD.py, MLKD.py, CTKD/distiller_zoo/KD.py)."""
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def official_kd_loss(logits_student_in, logits_teacher_in, temperature, logit_stand):
    """LS's mdistiller/distillers/KD.py ``kd_loss``."""
    logits_student = official_normalize(logits_student_in) if logit_stand else logits_student_in
    logits_teacher = official_normalize(logits_teacher_in) if logit_stand else logits_teacher_in
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    return loss_kd * temperature ** 2


def official_dkd_loss(logits_student_in, logits_teacher_in, target, alpha, beta, temperature, logit_stand):
    """LS's mdistiller/distillers/DKD.py ``dkd_loss`` (its masks and ``cat_mask``)."""
    logits_student = official_normalize(logits_student_in) if logit_stand else logits_student_in
    logits_teacher = official_normalize(logits_teacher_in) if logit_stand else logits_teacher_in
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(t):
        return torch.cat([(t * gt_mask).sum(1, keepdims=True), (t * other_mask).sum(1, keepdims=True)], dim=1)
    pred_student = cat_mask(F.softmax(logits_student / temperature, dim=1))
    pred_teacher = cat_mask(F.softmax(logits_teacher / temperature, dim=1))
    tckd = F.kl_div(torch.log(pred_student), pred_teacher, reduction='sum') * temperature ** 2 / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction='sum') * temperature ** 2 / target.shape[0]
    return alpha * tckd + beta * nckd


class OfficialReversal(torch.autograd.Function):
    """CTKD's models/temp_global.py ``GradientReversalFunction``."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grads):
        lambda_ = grads.new_tensor(ctx.lambda_)
        return lambda_ * grads, None


def official_ctkd_kl(y_s, y_t, global_t, lambda_, t_start, t_end):
    """CTKD's helper/loops.py temperature (``Global_T`` through the reversal layer, then t_start + t_end *
    sigmoid) and distiller_zoo/KD.py ``DistillKL`` at it."""
    temp = t_start + t_end * torch.sigmoid(OfficialReversal.apply(global_t, lambda_))
    return torch.nn.KLDivLoss(reduction='batchmean')(F.log_softmax(y_s / temp, dim=1),
                                                      F.softmax(y_t / temp, dim=1)) * temp * temp


def official_decay(epoch, max_value, min_value, num_loops, cosine):
    """CTKD's train_student.py ``CosineDecay``/``LinearDecay`` ``get_value``."""
    i = 0 if epoch < 0 else epoch
    if cosine:
        i = num_loops if i >= num_loops else i
        value = (math.cos(i * math.pi / num_loops) + 1.0) * 0.5
        return value * (max_value - min_value) + min_value
    i = num_loops - 1 if i >= num_loops else i
    return i * (-((max_value - min_value) / num_loops))


def case(seed, n=16, c=100, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).requires_grad_()
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale * 2 + 1
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def method(name, model_t='resnet32x4', model_s='resnet8x4', **flags):
    """A ``name`` Distiller with the command line's defaults for the pair; its networks are small stand-ins (only
    the pair's names choose the defaults)."""
    torch.manual_seed(0)
    student, teacher = model_dict['resnet8'](num_classes=100), model_dict['resnet8'](num_classes=100)
    return build_distiller(name, student, teacher, model_s=model_s, model_t=model_t, **flags)


def outputs(logits):
    return SimpleNamespace(logits=logits)


# ---- LS --------------------------------------------------------------------------------------------------

def test_standardize_is_the_official_normalize_and_the_population_form_is_the_z_score():
    s, t, _ = case(0)
    assert torch.equal(standardize(t), official_normalize(t))
    z = standardize(t, 'population')
    assert torch.allclose(z.mean(1), torch.zeros(16, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(z.pow(2).mean(1), torch.ones(16, dtype=torch.float64), rtol=1e-13)
    assert torch.allclose(z * math.sqrt(99 / 100), standardize(t), rtol=1e-6)  # sqrt((K - 1) / K), but for 1e-7
    assert standardize(t.half()).dtype == torch.float32


def test_the_two_stds_on_a_vector_worked_by_hand():
    # x = (1, 2, 3, 6): mean 3, deviations (-2, -1, 0, 3), squares summing to 14. The paper's Algorithm 1
    # divides by sqrt(14 / K) = sqrt(3.5) (population); the official normalize's torch.std by sqrt(14 / (K - 1)).
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)
    population = torch.tensor([[-1.0690450, -0.5345225, 0.0, 1.6035675]], dtype=torch.float64)
    sample = torch.tensor([[-0.9258201, -0.4629100, 0.0, 1.3887301]], dtype=torch.float64)
    assert torch.allclose(standardize(x, 'population'), population, atol=1e-7)
    assert torch.allclose(standardize(x), sample, atol=1e-7)
    assert not torch.allclose(standardize(x, 'population'), sample, atol=1e-3)


@pytest.mark.parametrize('stand', [False, True])
def test_kd_with_ls_is_the_official_kd_loss(stand):
    kd = method('kd', logit_stand=stand)
    assert (kd.gamma, kd.alpha, kd.kd_T) == ((0.1, 9.0, 2.0) if stand else (0.1, 0.9, 4.0))
    for seed in range(3):
        s, t, y = case(seed)
        terms = kd.ce_kd_terms(s, t, y)
        ce = F.cross_entropy(s, y)  # on the raw logits, with LS too
        ref = official_kd_loss(s, t, kd.kd_T, stand)
        assert terms['kd'].dtype == torch.float64
        assert abs(terms['kd'].item() - kd.alpha * ref.item()) < 1e-12 * kd.alpha * ref.item()
        assert abs(terms['ce'].item() - 0.1 * ce.item()) < 1e-14
        g_ours, = torch.autograd.grad(sum(terms.values()), s)
        g_ref, = torch.autograd.grad(0.1 * ce + kd.alpha * ref, s)
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('stand', [False, True])
def test_dkd_with_ls_is_the_official_dkd_loss(stand):
    dkd = method('dkd', logit_stand=stand)
    # resnet32x4 -> resnet8x4: mdistiller's BETA 8; LS's README run of the pair: --base-temp 2, --kd-weight 9
    assert (dkd.dkd_alpha, dkd.dkd_beta, dkd.temperature) == ((9.0, 72.0, 2.0) if stand else (1.0, 8.0, 4.0))
    for seed in range(3):
        s, t, y = case(seed)
        ours = dkd.method_loss(outputs(s), outputs(t), SimpleNamespace(targets=y), epoch=30)
        ref = official_dkd_loss(s, t, y, dkd.dkd_alpha, dkd.dkd_beta, dkd.temperature, stand)
        assert abs(ours.item() - ref.item()) < 1e-12 * ref.item()
        g_ours, = torch.autograd.grad(ours, s)
        g_ref, = torch.autograd.grad(ref, s)
        assert torch.allclose(g_ours, g_ref, rtol=1e-9, atol=1e-13)
    # the whole step ramps the DKD term in over 20 epochs, as the official forward_train
    s, t, y = case(5)
    terms = dkd.losses(outputs(s), outputs(t), SimpleNamespace(targets=y), epoch=5)
    ref = official_dkd_loss(s, t, y, dkd.dkd_alpha, dkd.dkd_beta, dkd.temperature, stand)
    assert terms['dkd'].item() == pytest.approx(5 / 20 * ref.item(), rel=1e-12)


def test_rld_with_ls_z_scores_what_its_loss_reads():
    from distiller_zoo.RLD import rld_loss
    rld = method('rld', logit_stand=True)
    s, t, y = case(1)
    ours = rld.method_loss(outputs(s), outputs(t), SimpleNamespace(targets=y), epoch=30)
    assert ours.item() == pytest.approx(rld_loss(s, t, y, 9.0, 72.0, 2.0, 2.0, logit_stand=True).item(), rel=1e-13)


def parse(*flags, model_t='resnet32x4', model_s='resnet8x4', dataset='cifar100'):
    return train_student.parse_args(['--path_t', f'x/{model_t}_vanilla/{model_t}_best.pth', '--model_t', model_t,
                                     '--model_s', model_s, '--dataset', dataset, *flags])


def test_ls_defaults_are_the_readme_runs_and_given_values_win():
    def kd(*flags, **pair):
        args = parse('--distill', 'kd', *flags, **pair)
        return args.gamma, args.alpha, args.kd_T
    assert kd() == (0.1, 0.9, 4.0)                        # RepDistiller's KD without LS
    assert kd('--logit_stand') == (0.1, 9.0, 2.0)          # train.py's --base-temp 2, --kd-weight 9
    assert kd('--logit-stand', model_t='vgg13', model_s='vgg8') == (0.1, 9.0, 3.0)  # log kd,vgg13,vgg8,3,9
    assert kd('--logit_stand', model_t='resnet110', model_s='resnet20') == (0.1, 12.0, 4.0)
    assert kd('--logit_stand', '--base-temp', '5', '--kd-weight', '3') == (0.1, 3.0, 5.0)
    assert kd('--logit_stand', '-a', '1', '--kd_T', '4') == (0.1, 1.0, 4.0)
    assert kd('--logit_stand', dataset='imagenet', model_t='ResNet34', model_s='ResNet18') == (0.1, 9.0, 2.0)

    def dkd(*flags, **pair):
        args = parse('--distill', 'dkd', *flags, **pair)
        return args.dkd_alpha, args.dkd_beta, args.dkd_T
    assert dkd('--logit_stand', model_t='vgg13', model_s='vgg8') == (15.0, 30.0, 2.0)     # dkd,vgg13,vgg8,2,15,2.0
    assert dkd('--logit_stand', model_t='resnet56', model_s='resnet20') == (18.0, 36.0, 3.0)
    assert dkd('--logit_stand', '--dkd_beta', '4') == (9.0, 4.0, 2.0)
    assert dkd('--logit_stand', '--dkd_alpha', '1') == (1.0, 72.0, 2.0)
    # a '++' keeps its own (ND's) weights, multiplied as train.py multiplies a config's: dkd++ 2, 8 for the pair
    args = parse('--distill', 'dkd++', '--logit_stand', model_t='vgg13', model_s='vgg8')
    assert (args.dkd_alpha, args.dkd_beta, args.dkd_T) == (18.0, 72.0, 2.0)
    args = parse('--distill', 'kd++', '--logit_stand', model_t='vgg13', model_s='vgg8')
    assert (args.gamma, args.alpha, args.kd_T) == (1.0, 9.0, 2.0)
    args = parse('--distill', 'ctkd', '--logit_stand')
    assert (args.gamma, args.alpha, args.beta) == (0.1, 9.0, 0.0)   # LS's CTKD/scripts: -r 0.1 -a 9
    assert parse('--distill', 'kd', '--logit_stand', '--ls_std', 'population').ls_std == 'population'
    assert parse('--distill', 'kd', '--logit_stand').weights_note == (
        "weights: CE 0.1, KD 9, kd 0 (gamma, beta from the kd defaults; alpha from LS's --kd-weight); LS: logits "
        "z-scored (sample std), --base-temp 2, --kd-weight 9")


def test_the_population_std_is_what_the_method_reads_under_ls_std_population():
    kd = method('kd', logit_stand=True, ls_std='population')
    s, t, y = case(2)
    expected = 9.0 * official_kd_loss(standardize(s, 'population'), standardize(t, 'population'), 2.0, False)
    assert kd.ce_kd_terms(s, t, y)['kd'].item() == pytest.approx(expected.item(), rel=1e-13)
    assert kd.ce_kd_terms(s, t, y)['kd'].item() != pytest.approx(9.0 * official_kd_loss(s, t, 2.0, True).item(),
                                                                   rel=1e-6)


def test_ls_names_the_run_folder():
    assert train_student.run_name(parse('--distill', 'kd', '--logit_stand')).endswith(
        '_kd_r:0.1_a:9_b:0_kd_T:2_logit_stand_0')
    assert train_student.run_name(parse('--distill', 'kd')).endswith('_kd_r:0.1_a:0.9_b:0_0')


def test_pack_members_take_ls_as_a_switch():
    args = train_student.parse_args(['--path_t', 'x/resnet32x4_vanilla/r.pth', '--model_s', 'resnet8x4',
                                     '--distill', 'kd,kd:logit_stand,dkd:logit-stand:base-temp=3,ctkd'])
    kd, kd_ls, dkd_ls, ctkd = args.members
    assert (kd.logit_stand, kd.alpha, kd.kd_T) == (False, 0.9, 4.0)
    assert (kd_ls.logit_stand, kd_ls.alpha, kd_ls.kd_T) == (True, 9.0, 2.0)
    assert (dkd_ls.logit_stand, dkd_ls.dkd_T, dkd_ls.dkd_alpha) == (True, 3.0, 9.0)
    assert ctkd.distill == 'ctkd' and not ctkd.logit_stand


@pytest.mark.parametrize('flags, message', [
    (('--distill', 'crd', '--logit_stand'), r'^--logit_stand \(LS\) z-scores the logits of KD-type terms, and crd '
                                            r'has none it is defined for; it modifies ctkd, ctkd\+\+, dkd'),
    (('--distill', 'hint', '--logit-stand'), 'hint has none it is defined for'),
    (('--distill', 'sdd_dkd', '--logit_stand'), 'sdd_dkd has none it is defined for'),  # a DKD that reads no LS
    (('--distill', 'kd', '--base-temp', '3'), r'^--base-temp sets logit standardisation \(LS\); it acts only with '
                                              r'--logit_stand$'),
    (('--distill', 'dkd', '--kd-weight', '3'), '--kd-weight sets logit standardisation'),
    (('--distill', 'kd', '--logit_stand', '--base-temp', '0'), '^--base-temp must be positive, got 0$'),
    (('--distill', 'kd', '--logit_stand', '--kd-weight', '-1'), '^--kd-weight cannot be negative, got -1$'),
    (('--distill', 'ctkd', '--t_start', '-1'), r"^CTKD's temperature t_start \+ t_end \* sigmoid\(g\) spans \(-1, "
                                               r"19\) with --t_start -1 --t_end 20; both ends must be positive$"),
    (('--distill', 'ctkd', '--t_start', '2', '--t_end', '-3'), r'spans \(-1, 2\)'),
    (('--distill', 'ctkd', '--t_start', '0'), r'spans \(0, 20\)'),
    (('--distill', 'ctkd', '--mlp_name', 'instance'), "^--mlp_name instance: CTKD's instance-wise temperature"),
    (('--distill', 'ctkd', '--decay_loops', '0'), '^--decay_loops must be positive, got 0$'),
])
def test_bad_ls_and_ctkd_settings_are_one_line(flags, message):
    with pytest.raises(KDZooError, match=message) as err:
        parse(*flags)
    assert '\n' not in str(err.value)


def test_mlkd_takes_ls_as_the_readme_runs_z_scoring_its_instance_terms_only():
    """LS's MLKD: --kd-weight becomes -b (the weight of all MLKD terms), --base-temp its base temperature, 2 and
    6 on the three README pairs that say so, 2 and 9 elsewhere; the loss is mlkd_loss with its instance terms
    z-scored (the population std under --ls_std population)."""
    from distiller_zoo.MLKD import mlkd_loss
    for (model_t, model_s), weight in ((('vgg13', 'vgg8'), 6.0), (('resnet32x4', 'resnet8x4'), 9.0)):
        args = parse('--distill', 'mlkd', '--logit_stand', model_t=model_t, model_s=model_s)
        assert (args.gamma, args.alpha, args.beta, args.mlkd_T) == (0.1, 0.0, weight, 2.0)
    given = parse('--distill', 'mlkd_noaug', '--logit_stand', '-b', '3', '--mlkd_T', '5')
    assert (given.beta, given.mlkd_T) == (3.0, 5.0)
    s, t, y = case(1)
    for std in ('sample', 'population'):
        mlkd = method('mlkd_noaug', logit_stand=True, ls_std=std)
        ours = mlkd.losses(outputs(s), outputs(t), SimpleNamespace(targets=y), epoch=30)['mlkd_noaug']
        expected = mlkd.beta * mlkd_loss(s, t, mlkd.temperature, standardize=std)
        assert ours.item() == pytest.approx(expected.item(), rel=1e-13)
        assert ours.item() != pytest.approx((mlkd.beta * mlkd_loss(s, t, mlkd.temperature)).item(), rel=1e-3)


def test_a_pack_member_with_ls_on_a_feature_method_is_refused_in_one_line():
    with pytest.raises(KDZooError, match=r"^pack member 'resnet8x4 crd:logit_stand': --logit_stand \(LS\)"):
        train_student.parse_args(['--path_t', 'x/resnet32x4_vanilla/r.pth', '--model_s', 'resnet8x4',
                                  '--distill', 'kd,crd:logit_stand'])


# ---- CTKD ------------------------------------------------------------------------------------------------

def test_curriculum_lambda_by_hand():
    cos = [curriculum_lambda(e, 0.0, -1.0, 10) for e in (0, 1, 5, 10, 11, 240)]
    assert cos[0] == 0.0 and cos[3] == cos[4] == cos[5] == -1.0
    assert cos[1] == pytest.approx((math.cos(math.pi / 10) + 1) / 2 - 1, abs=1e-16)  # -0.02447
    assert cos[1] == pytest.approx(-0.024471741852423234, abs=1e-15)
    assert cos[2] == pytest.approx(-0.5, abs=1e-15)
    # LinearDecay: -i * span / loops with i at most loops - 1; decay_max is not where it starts
    lin = [curriculum_lambda(e, 0.0, -1.0, 10, cosine=False) for e in (0, 1, 3, 9, 10, 100)]
    assert lin == pytest.approx([0.0, -0.1, -0.3, -0.9, -0.9, -0.9], abs=1e-15)
    assert curriculum_lambda(1, 0.5, -1.0, 10, cosine=False) == pytest.approx(-0.15)
    assert curriculum_lambda(0, 0.5, -1.0, 10) == 0.5  # the cosine starts at decay_max
    # ImageNet's 5 loops: -1 from epoch 5 on
    assert curriculum_lambda(5, 0.0, -1.0, 5) == -1.0 and curriculum_lambda(3, 0.0, -1.0, 5) == pytest.approx(
        (math.cos(3 * math.pi / 5) + 1) / 2 - 1)
    for e in range(0, 30):
        for args in ((0.0, -1.0, 10), (0.3, -2.0, 7.0), (0.0, -1.0, 5)):
            for cosine in (True, False):
                assert curriculum_lambda(e, *args, cosine=cosine) == official_decay(e, *args, cosine)


@pytest.mark.parametrize('epoch, stand', [(1, False), (5, False), (30, False), (30, True)])
def test_ctkd_temperature_forward_and_backward_through_the_reversal_layer(epoch, stand):
    ctkd = method('ctkd', logit_stand=stand).double()
    assert (ctkd.gamma, ctkd.alpha, ctkd.beta) == ((0.1, 9.0, 0.0) if stand else (0.1, 0.9, 0.0))
    with torch.no_grad():
        ctkd.temperature.global_T.fill_(0.3 * epoch - 2)  # somewhere along the curve, not the start
    lambda_ = official_decay(epoch, 0.0, -1.0, 10, True)
    s, t, y = case(epoch)
    terms = ctkd.losses(outputs(s), outputs(t), SimpleNamespace(targets=y), epoch)
    assert set(terms) == {'ce', 'kd'}
    g_ref = torch.full((1,), 0.3 * epoch - 2, dtype=torch.float64, requires_grad=True)
    s_ref = s.detach().clone().requires_grad_()
    ys, yt = (official_normalize(s_ref), official_normalize(t)) if stand else (s_ref, t)
    ref = ctkd.alpha * official_ctkd_kl(ys, yt, g_ref, lambda_, 1.0, 20.0)
    assert terms['kd'].shape == () and terms['kd'].item() == pytest.approx(ref.item(), rel=1e-12)
    total = sum(terms.values())
    total.backward()
    (0.1 * F.cross_entropy(s_ref, y) + ref.sum()).backward()
    assert torch.allclose(s.grad, s_ref.grad, rtol=1e-10, atol=1e-14)
    assert ctkd.temperature.global_T.grad.item() == pytest.approx(g_ref.grad.item(), rel=1e-10)


def test_the_reversal_layer_has_no_minus_sign_the_negative_lambda_flips_the_gradient():
    """d(alpha KD)/dg by hand: lambda * alpha * dKD/dT * t_end * sigmoid'(g); the temperature is 1 + 20 sigmoid(1)
    at the start, 15.62."""
    s, t, _ = case(7)
    s = s.detach()
    module = GlobalTemperature().double()
    temp = 1 + 20 * torch.sigmoid(module(-0.5))
    assert temp.item() == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-15)
    kd = torch.nn.KLDivLoss(reduction='batchmean')
    loss = kd(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1)) * temp * temp
    loss.sum().backward()
    plain_t = torch.tensor(temp.item(), dtype=torch.float64, requires_grad=True)
    kd(F.log_softmax(s / plain_t, 1), F.softmax(t / plain_t, 1)).mul(plain_t ** 2).backward()
    sig = 1 / (1 + math.exp(-1))
    assert module.global_T.grad.item() == pytest.approx(-0.5 * plain_t.grad.item() * 20 * sig * (1 - sig), rel=1e-12)
    assert module(0.5).item() == module(-3.0).item() == 1.0  # the forward is the identity at any lambda
    module.global_T.grad = None
    temp = 1 + 20 * torch.sigmoid(module(1.0))  # lambda 1: the plain gradient, no reversal
    (kd(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1)) * temp * temp).sum().backward()
    assert module.global_T.grad.item() == pytest.approx(plain_t.grad.item() * 20 * sig * (1 - sig), rel=1e-12)


def test_the_temperature_module_is_trained_with_the_student_and_recorded():
    args = parse('--distill', 'ctkd')
    assert (args.have_mlp, args.mlp_name, args.t_start, args.t_end, args.cosine_decay, args.decay_max,
            args.decay_min, args.decay_loops) == (1, 'global', 1.0, 20.0, 1, 0.0, -1.0, 10.0)
    assert parse('--distill', 'ctkd', model_t='ResNet34', model_s='ResNet18', dataset='imagenet').decay_loops == 5.0
    imagenet = parse('--distill', 'ctkd', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert (imagenet.gamma, imagenet.alpha, imagenet.beta) == (1.0, 1.0, 0.0)  # scripts/run_imagenet_distill.sh
    ctkd = method('ctkd')
    assert ctkd.trainable_modules() == [ctkd]
    assert [name for name, _ in ctkd.named_parameters()] == ['temperature.global_T']
    assert ctkd.epoch_values() == {'ctkd_T': pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-6)}
    fixed = method('ctkd', have_mlp=0)  # the official fixed temperature: KD at --kd_T, no module
    assert fixed.trainable_modules() == [] and fixed.epoch_values() == {} and fixed.temperature_at(3) == 4.0
    flags = set(DISTILLERS['ctkd'].flag_dests(train_student.build_parser()))
    assert {'have_mlp', 'mlp_name', 't_start', 't_end', 'cosine_decay', 'decay_max', 'decay_min', 'decay_loops',
            'logit_stand', 'kd_T'} <= flags


# ---- whole runs ------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def digits_teacher(tmp_path_factory):
    from test_pack import random_teacher
    return random_teacher(tmp_path_factory.mktemp('teacher'), 'resnet20', 10)


@pytest.mark.slow
def test_an_interrupted_ctkd_run_resumes_its_temperature_exactly(digits_teacher, tmp_path, monkeypatch):
    first_digits(monkeypatch, 192, 64)  # runs compared with each other: a part of the digits does
    from engine.loop import Trainer
    common = ['--path_t', digits_teacher, '--dataset', 'digits', '--distill', 'ctkd', '--model_s', 'resnet8',
              '--deterministic', '--epochs', '3', '--decay_loops', '2']
    whole = train_student.main([*common, '--save_root', str(tmp_path / 'whole')])
    original_save = Trainer.save

    def crash_after_first_epoch(self, epoch, top1, is_best):
        original_save(self, epoch, top1, is_best)
        if epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, 'save', crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_student.main([*common, '--save_root', str(tmp_path / 'parted')])
    monkeypatch.setattr(Trainer, 'save', original_save)
    parted = train_student.main([*common, '--save_root', str(tmp_path / 'parted'), '--resume', 'auto'])
    temperatures = [record['ctkd_T'] for record in whole['history']]
    assert [record['ctkd_T'] for record in parted['history']] == temperatures
    assert len(set(temperatures)) == 3 and temperatures[0] != 1 + 20 / (1 + math.exp(-1))  # it moved

    def last(root):
        folder = root / 'students' / 'models'
        return torch.load(folder / os.listdir(folder)[0] / 'resnet8_last.pth', weights_only=True)
    a, b = last(tmp_path / 'whole'), last(tmp_path / 'parted')
    assert torch.equal(a['kdzoo']['objective']['method.temperature.global_T'],
                       b['kdzoo']['objective']['method.temperature.global_T'])
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    for x, y in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):  # the momentum too
        assert torch.equal(x['momentum_buffer'], y['momentum_buffer'])


@pytest.mark.slow
def test_a_pack_of_kd_kd_with_ls_and_ctkd_equals_the_single_runs(digits_teacher, tmp_path, monkeypatch):
    first_digits(monkeypatch, 192, 64)  # runs compared with each other: a part of the digits does
    from test_pack import assert_same_runs, single_runs
    common = ['--path_t', digits_teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic',
              '--print_freq', '5']
    states = train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,kd:logit_stand,ctkd',
                                 '--save_root', str(tmp_path / 'pack')])
    assert sorted(states) == ['resnet8 ctkd', 'resnet8 kd', 'resnet8 kd:logit_stand']
    single_runs(common, [('resnet8', 'kd'), ('resnet8', 'kd', '--logit_stand'), ('resnet8', 'ctkd')],
                tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
