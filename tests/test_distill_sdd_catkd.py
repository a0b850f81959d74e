"""SDD (sdd_kd, sdd_dkd, sdd_nkd) and CAT-KD (catkd): the multi-scale logits and class maps of the feature API
against SDD's SPP and CAT-KD's ``conv_test`` models, each loss and its gradient against a float64 op-for-op
transcription of the official code (shicaiwei123/SDD-CVPR2024 KD.py ``sdd_kd_loss``, SDD_DKD.py ``multi_dkd``,
SDD_nkd.py ``multi_nkd_loss``; GzyAftermath/CAT-KD CAT_KD.py ``CAT_loss``), the per-pair defaults, the bad
flags and families, the teacher's pooled map in a shared pass, and a pack that equals the single runs."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_student
from dataset.batches import Batch
from distiller_zoo import DISTILLERS, TeacherRequest, run_teacher
from distiller_zoo.CATKD import binarize_cams, cat_loss
from distiller_zoo.DKD import dkd_loss
from distiller_zoo.NKD import nkd_loss
from distiller_zoo.SDD import region_weights, sdd_dkd_loss, sdd_kd_loss, sdd_nkd_loss
from distiller_zoo.base import kd_loss
from distiller_zoo.teacher import served_output, shared_passes
from helper.errors import KDZooError
from models import imagenet_model_dict, model_dict
from models.features import check_classifies_regions, class_activation_maps, region_logits

from test_pack import assert_same_runs, random_teacher, single_runs
from reference import parse

from conftest import small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)

RNG = np.random.default_rng(20)


# ------------------------------------------------------------------------------ the official code, float64

def official_patch_scores(fmap, fc, M):
    """SPP.forward then the models' patch_score lines (mdistiller/models/cifar/utils.py, resnet.py)."""
    x_4x4 = F.adaptive_avg_pool2d(fmap, (4, 4))
    x_2x2 = F.adaptive_avg_pool2d(x_4x4, (2, 2))
    x_1x1 = F.adaptive_avg_pool2d(x_4x4, (1, 1))
    flat = [torch.flatten(x, start_dim=2, end_dim=3) for x in (x_1x1, x_2x2, x_4x4)]
    x_feature = torch.cat(flat[:{'[1,2,4]': 3, '[1,2]': 2}[M]], dim=2)
    x_spp = x_feature.permute((2, 0, 1))
    m, b, c = x_spp.shape
    patch_score = fc(torch.reshape(x_spp, (m * b, c)))
    return torch.reshape(patch_score, (m, b, -1)).permute((1, 2, 0))


def rows(multi):
    """B x C x N to N*B x C, as the three losses open."""
    t = multi.permute(2, 0, 1)
    return torch.reshape(t, (t.shape[0] * t.shape[1], t.shape[2]))


def official_index(out_t, target_r, target, n):
    """The four masks and the 1/2 weights, line by line as the three losses write them."""
    out_t_predict = torch.argmax(out_t, dim=1)
    mask_true = out_t_predict == target_r
    mask_false = out_t_predict != target_r
    global_prediction = out_t_predict[0:len(target)]
    true_repeat = (global_prediction == target).repeat(n)
    false_repeat = (global_prediction != target).repeat(n)
    mask_false[false_repeat] = False
    mask_false[0:len(target)] = False
    gt_lw = mask_false
    mask_true[true_repeat] = False
    mask_true[0:len(target)] = False
    gw_lt = mask_true
    mask_false = out_t_predict != target_r
    mask_true = out_t_predict == target_r
    mask_false[true_repeat] = False
    gw_lw = mask_false
    mask_true[false_repeat] = False
    gt_lt = mask_true
    assert torch.sum(gt_lt) + torch.sum(gw_lw) + torch.sum(gt_lw) + torch.sum(gw_lt) == target_r.shape[0]
    index = torch.zeros(len(target_r), dtype=torch.float64)
    index[gw_lw] = 1.0
    index[gt_lt] = 1.0
    index[gw_lt] = 2.0
    index[gt_lw] = 2.0
    return index


def official_sdd_kd(out_s_multi, out_t_multi, T, target):
    out_s, out_t = rows(out_s_multi), rows(out_t_multi)
    target_r = target.repeat(out_t_multi.shape[2])
    loss_kd = F.kl_div(F.log_softmax(out_s / T, dim=1), F.softmax(out_t / T, dim=1), reduction='none') * (T ** 2)
    loss_kd = torch.sum(loss_kd, dim=1)
    index = official_index(out_t, target_r, target, out_t_multi.shape[2])
    return torch.sum(loss_kd * index) / target_r.shape[0]


def official_dkd_rows(logits_student, logits_teacher, target, alpha, beta, temperature):
    """SDD_DKD.py's dkd_loss: per row, already divided by the number of rows."""
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(t):
        return torch.cat([(t * gt_mask).sum(dim=1, keepdims=True), (t * other_mask).sum(1, keepdims=True)], dim=1)
    pred_student = cat_mask(F.softmax(logits_student / temperature, dim=1))
    pred_teacher = cat_mask(F.softmax(logits_teacher / temperature, dim=1))
    tckd = F.kl_div(torch.log(pred_student), pred_teacher, reduction='none') * temperature ** 2 / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = (F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction='none') * temperature ** 2
            / target.shape[0])
    return alpha * torch.sum(tckd, dim=1) + beta * torch.sum(nckd, dim=1)


def official_multi_dkd(out_s_multi, out_t_multi, target, alpha, beta, temperature):
    out_s, out_t = rows(out_s_multi), rows(out_t_multi)
    target_r = target.repeat(out_t_multi.shape[2])
    loss = official_dkd_rows(out_s, out_t, target_r, alpha, beta, temperature)
    return torch.sum(loss * official_index(out_t, target_r, target, out_t_multi.shape[2]))


def official_nkd_rows(logit_s, logit_t, gt_label, temp, gamma):
    """SDD_nkd.py's nkd_loss (its mask keeps every class: scatter_ of 1 on ones)."""
    label = gt_label.view(len(gt_label), 1)
    N, c = logit_s.shape
    s_t = torch.gather(F.log_softmax(logit_s, dim=1), 1, label)
    t_t = torch.gather(F.softmax(logit_t, dim=1), 1, label).detach()
    loss_t = - (t_t * s_t)
    mask = torch.ones_like(logit_s).scatter_(1, label, 1).bool()
    S_i = F.log_softmax(logit_s[mask].reshape(N, -1) / temp, dim=1)
    T_i = F.softmax(logit_t[mask].reshape(N, -1) / temp, dim=1)
    loss_non = - gamma * (temp ** 2) * (T_i * S_i).sum(dim=1)
    return torch.squeeze(loss_t, dim=1) + loss_non


def official_multi_nkd(logit_s, logit_t, gt_label, temp, gamma):
    out_s, out_t = rows(logit_s), rows(logit_t)
    target_r = gt_label.repeat(logit_t.shape[2])
    loss = official_nkd_rows(out_s, out_t, target_r, temp, gamma)
    return torch.sum(loss * official_index(out_t, target_r, gt_label, logit_t.shape[2])) / target_r.shape[0]


def official_cat_loss(CAM_Student, CAM_Teacher, CAM_RESOLUTION, IF_NORMALIZE):
    CAM_Student = F.adaptive_avg_pool2d(CAM_Student, (CAM_RESOLUTION, CAM_RESOLUTION))
    CAM_Teacher = F.adaptive_avg_pool2d(CAM_Teacher, (CAM_RESOLUTION, CAM_RESOLUTION))
    if IF_NORMALIZE:
        CAM_Student, CAM_Teacher = F.normalize(CAM_Student, dim=(2, 3)), F.normalize(CAM_Teacher, dim=(2, 3))
    return F.mse_loss(CAM_Student, CAM_Teacher)


# ------------------------------------------------------------------------------ tiny inputs

def region_inputs(batch=6, classes=4, regions=5):
    """Teacher region logits with every case: right and wrong on the whole map, right and wrong per region."""
    s = RNG.normal(0, 2, (batch, classes, regions))
    t = RNG.normal(0, 3, (batch, classes, regions))
    y = t[:, :, 0].argmax(1)
    y[::2] = (y[::2] + 1) % classes  # the teacher's whole-map prediction is wrong on every other sample
    return torch.tensor(s), torch.tensor(t), torch.tensor(y)


def value_and_grad(loss, s, *rest):
    s = s.clone().requires_grad_(True)
    value = loss(s, *rest)
    value.backward()
    return value.detach(), s.grad


def test_region_weights_are_the_official_masks():
    s, t, y = region_inputs(8, 3, 21)
    weights = region_weights(t, y)
    index = official_index(rows(t), y.repeat(21), y, 21)
    assert torch.equal(weights.reshape(-1).double(), index)
    assert set(index.tolist()) == {1.0, 2.0} and (weights[0] == 1).all()  # both kinds; region 0 consistent
    assert torch.equal(region_weights(t, y, 3.5), torch.where(weights == 2, 3.5, 1.0))


@pytest.mark.parametrize('T', [4.0, 1.0])
def test_sdd_kd_value_and_gradient_match_the_official_code(T):
    s, t, y = region_inputs()
    value, grad = value_and_grad(sdd_kd_loss, s, t, y, T)
    reference, reference_grad = value_and_grad(lambda a: official_sdd_kd(a, t, T, y), s)
    assert value.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('alpha, beta, T', [(1.0, 8.0, 4.0), (1.0, 0.5, 1.0), (2.0, 6.0, 2.0)])
def test_sdd_dkd_value_and_gradient_match_the_official_code(alpha, beta, T):
    s, t, y = region_inputs()
    value, grad = value_and_grad(sdd_dkd_loss, s, t, y, alpha, beta, T)
    reference, reference_grad = value_and_grad(lambda a: official_multi_dkd(a, t, y, alpha, beta, T), s)
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize('T, gamma', [(4.0, 8.0), (1.0, 2.0)])
def test_sdd_nkd_value_and_gradient_match_the_official_code(T, gamma):
    s, t, y = region_inputs()
    value, grad = value_and_grad(sdd_nkd_loss, s, t, y, T, gamma)
    reference, reference_grad = value_and_grad(lambda a: official_multi_nkd(a, t, y, T, gamma), s)
    assert value.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-10, atol=1e-14)
    # the paper's form removes the target: another value
    assert sdd_nkd_loss(s, t, y, T, gamma, all_classes=False).item() != pytest.approx(value.item(), rel=1e-3)


def test_the_region_losses_are_averaged_not_summed():
    """Every region a copy of the whole map: all weights 1, and each SDD loss is its plain loss on the logits
    (the issue note's 'sums the per-region losses' does not hold for the code: it divides by regions * batch)."""
    s, t, y = region_inputs(6, 5, 1)
    s5, t5 = s.repeat(1, 1, 5), t.repeat(1, 1, 5)
    ls, lt = s[:, :, 0], t[:, :, 0]
    assert (region_weights(t5, y) == 1).all()
    assert sdd_kd_loss(s5, t5, y, 4.0).item() == pytest.approx(kd_loss(ls, lt, 4.0).item(), rel=1e-6)  # fp32
    assert sdd_dkd_loss(s5, t5, y, 1.0, 8.0, 4.0).item() == pytest.approx(
        dkd_loss(ls, lt, y, 1.0, 8.0, 4.0).item(), rel=1e-12)
    assert sdd_nkd_loss(s5, t5, y, 4.0, 8.0).item() == pytest.approx(
        nkd_loss(ls, lt, y, 4.0, 8.0, all_classes=True).item(), rel=1e-12)


# ------------------------------------------------------------------------------ the feature API

def build(zoo, name, classes=10):
    torch.manual_seed(0)
    return (model_dict if zoo == 'cifar' else imagenet_model_dict)[name](num_classes=classes).double().eval()


def hand_regions(fmap, scales):
    """Each s x s region's mean, cut by hand (adaptive pooling's cells), in SDD's order."""
    h, w = fmap.shape[2:]
    out = []
    for s in scales:
        for i in range(s):
            for j in range(s):
                rows_, cols = slice(i * h // s, -(-(i + 1) * h // s)), slice(j * w // s, -(-(j + 1) * w // s))
                out.append(fmap[:, :, rows_, cols].mean((2, 3)))
    return torch.stack(out, dim=2)  # B, C, N


@pytest.mark.parametrize('name', ['resnet8x4', 'wrn_16_2', 'vgg8', 'MobileNetV2', 'ShuffleV2'])
def test_region_logits_are_the_classifier_of_hand_pooled_regions(name):
    model = build('cifar', name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        fmap = model.forward_features(x)
        logits = model(x)
        multi = region_logits(model, fmap, (1, 2, 4))
    regions = hand_regions(fmap, (1, 2, 4))
    expected = torch.stack([model.classify(regions[:, :, n]) for n in range(21)], dim=2)
    torch.testing.assert_close(multi, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(multi[:, :, 0], logits, rtol=1e-12, atol=1e-12)  # region 0 is the whole map
    torch.testing.assert_close(region_logits(model, fmap, (1, 2)), multi[:, :, :5], rtol=0, atol=0)


def test_region_logits_are_sdds_spp_on_a_7x7_map_with_gradients():
    """ImageNet's 7x7 maps: the 4x4 cells overlap and the 2x2 and 1x1 regions are pooled from them, as SDD's
    SPP (so region 0 is not exactly the logits there); value and gradient of the map and classifier."""
    fc = torch.nn.Linear(6, 5).double()
    net = types.SimpleNamespace(classify=fc)
    fmap = torch.randn(3, 6, 7, 7, dtype=torch.float64, requires_grad=True)
    ours = region_logits(net, fmap, (1, 2, 4))
    grads = torch.autograd.grad((ours * torch.arange(21.0)).sum(), [fmap, fc.weight])
    theirs = official_patch_scores(fmap, fc, '[1,2,4]')
    expected = torch.autograd.grad((theirs * torch.arange(21.0)).sum(), [fmap, fc.weight])
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ours[:, :, 0], fc(fmap.mean((2, 3))))
    torch.testing.assert_close(region_logits(net, fmap, (1, 2)), official_patch_scores(fmap, fc, '[1,2]'))


@pytest.mark.parametrize('zoo, name, side', [('cifar', 'wrn_16_2', 32), ('cifar', 'ShuffleV1', 32),
                                             ('imagenet', 'MobileNetV1', 64)])
def test_class_maps_are_conv_test_of_the_classifier_weight(zoo, name, side):
    """CAT-KD's ``*_test`` models: conv_test (the fc weight, no bias) on the pooled map; its mean is the
    logits less the bias."""
    model = build(zoo, name)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        fmap = model.forward_features(x)
        cams = class_activation_maps(model, fmap)
        fc = model.get_classifier()
        conv_test = torch.nn.Conv2d(fc.in_features, fc.out_features, 1, bias=False).double()
        conv_test.weight.copy_(fc.weight.view(fc.out_features, fc.in_features, 1, 1))
        torch.testing.assert_close(cams, conv_test(fmap), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cams.mean((2, 3)) + fc.bias, model(x), rtol=1e-10, atol=1e-10)


def test_other_families_are_refused_in_one_line():
    hcgnet = model_dict['hcgnet_A1'](num_classes=10)
    for net in (hcgnet, torch.nn.Linear(3, 3)):
        with pytest.raises(KDZooError) as error:
            check_classifies_regions(net, 'thatnet', 'sdd_kd')
        assert '\n' not in str(error.value) and 'thatnet' in str(error.value)
    args = parse('catkd', model_t='resnet20', model_s='hcgnet_A1')
    with pytest.raises(KDZooError, match="CAT-KD applies hcgnet_A1's classifier"):
        DISTILLERS['catkd'](args, hcgnet, model_dict['resnet20'](num_classes=10), None, None, None)


# ------------------------------------------------------------------------------ CAT-KD's loss

@pytest.mark.parametrize('resolution, normalize', [(2, False), (2, True), (4, True), (1, False)])
def test_cat_loss_value_and_gradient_match_the_official_code(resolution, normalize):
    gen = torch.Generator().manual_seed(3)
    fmap_s = torch.randn(2, 5, 4, 4, generator=gen, dtype=torch.float64).relu()
    fmap_t = torch.randn(2, 7, 8, 8, generator=gen, dtype=torch.float64).relu()
    w_s = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w_t = torch.randn(6, 7, generator=gen, dtype=torch.float64)
    fmap_s.requires_grad_(True)
    student = types.SimpleNamespace(get_classifier=lambda: types.SimpleNamespace(weight=w_s))
    teacher = types.SimpleNamespace(get_classifier=lambda: types.SimpleNamespace(weight=w_t))
    ours = cat_loss(class_activation_maps(student, fmap_s), class_activation_maps(teacher, fmap_t), resolution,
                    normalize)
    grads = torch.autograd.grad(ours, [fmap_s, w_s])
    theirs = official_cat_loss(F.conv2d(fmap_s, w_s.view(6, 5, 1, 1)), F.conv2d(fmap_t, w_t.view(6, 7, 1, 1)),
                               resolution, normalize)
    expected = torch.autograd.grad(theirs, [fmap_s, w_s])
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    # NumPy: pool by blocks, normalise, mean square
    def pooled(f, w, r):
        cams = np.einsum('kc,bchw->bkhw', w, f)
        b, k, h, wd = cams.shape
        return cams.reshape(b, k, r, h // r, r, wd // r).mean((3, 5))
    ps, pt = (pooled(f.detach().numpy(), w.detach().numpy(), resolution) for f, w in ((fmap_s, w_s), (fmap_t, w_t)))
    if normalize:
        ps, pt = (p / np.maximum(np.sqrt((p ** 2).sum((2, 3), keepdims=True)), 1e-12) for p in (ps, pt))
    assert ours.item() == pytest.approx(((ps - pt) ** 2).mean(), rel=1e-12)


def test_binarized_teacher_maps_are_the_official_threshold():
    cams = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    n, c, h, w = cams.shape
    threshold = torch.norm(cams, dim=(2, 3), keepdim=True, p=1) / (h * w)
    expected = torch.relu(cams - threshold).bool() * torch.ones_like(cams)
    assert torch.equal(binarize_cams(cams), expected) and 0 < expected.sum() < expected.numel()


# ------------------------------------------------------------------------------ the methods

def step(name, *flags, model_t='resnet20', model_s='resnet8'):
    """One forward_train of a method on random images, with its own teacher pass."""
    args = parse(name, *flags, model_t=model_t, model_s=model_s)
    torch.manual_seed(0)
    student, teacher = model_dict[model_s](num_classes=100), model_dict[model_t](num_classes=100).eval()
    method = DISTILLERS[name](args, student, teacher, None, None, None)
    gen = torch.Generator().manual_seed(5)
    batch = Batch(torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 100, (4,), generator=gen),
                  torch.arange(4))
    out_t = run_teacher(teacher, batch, method.teacher_request())
    logits, terms = method.forward_train(student, batch, out_t, epoch=30)
    return args, student, teacher, batch, logits, terms


def test_each_term_is_the_weighted_loss_on_both_networks_regions():
    args, student, teacher, batch, logits, terms = step('sdd_dkd')
    assert args.sdd_M == '1,2,4' and set(terms) == {'ce', 'sdd_dkd'}
    with torch.no_grad():
        regions_t = region_logits(teacher, teacher.forward_features(batch.images), (1, 2, 4))
    regions_s = region_logits(student, student.forward_features(batch.images), (1, 2, 4))
    expected = sdd_dkd_loss(regions_s, regions_t, batch.targets, 1.0, 8.0, 4.0)
    torch.testing.assert_close(terms['sdd_dkd'], expected, rtol=1e-6, atol=0)
    assert torch.equal(logits, student(batch.images))

    *_, batch, logits, terms = step('sdd_kd', '--sdd_M', '[1]')  # SDD's --M spelling; M 1 is plain KD
    assert terms['sdd_kd'].item() == pytest.approx(0.9 * kd_loss(logits, teacher(batch.images), 4.0).item(),
                                                   rel=1e-6)
    args, student, teacher, batch, logits, terms = step('catkd', '--cat_binarize')
    assert (args.beta, args.cat_resolution, args.cat_normalize) == (400.0, 2, 1)
    with torch.no_grad():
        cams_t = binarize_cams(class_activation_maps(teacher, teacher.forward_features(batch.images)))
    cams_s = class_activation_maps(student, student.forward_features(batch.images))
    torch.testing.assert_close(terms['catkd'], 400.0 * cat_loss(cams_s, cams_t, 2, True), rtol=1e-6, atol=0)


def test_defaults_per_pair_and_data_set():
    args = parse('sdd_kd')
    assert (args.gamma, args.alpha, args.beta, args.kd_T, args.sdd_M, args.sdd_weight) == (0.1, 0, 0.9, 4, '1,2', 2)
    assert parse('sdd_kd', model_s='ShuffleV1').sdd_M == '1,2,4'
    args = parse('sdd_dkd', model_t='vgg13', model_s='vgg8')
    assert (args.gamma, args.beta, args.dkd_alpha, args.dkd_beta, args.dkd_T, args.dkd_warmup, args.sdd_M) == \
        (1, 1, 1, 6, 4, 20, '1,2')
    assert parse('sdd_dkd', model_t='vgg13', model_s='ShuffleV1').dkd_beta == 6.0  # not a DKD config pair
    args = parse('sdd_dkd', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert (args.dkd_beta, args.dkd_T, args.dkd_warmup, args.sdd_M) == (0.5, 1, 1, '1,2')
    args = parse('sdd_nkd')
    assert (args.gamma, args.beta, args.sdd_nkd_gamma, args.sdd_nkd_T, args.sdd_nkd_warmup, args.sdd_M) == \
        (1, 1, 8, 4, 20, '1,2')
    assert not args.sdd_nkd_target_removed
    args = parse('sdd_nkd', model_t='ResNet50', model_s='MobileNetV1', dataset='imagenet')
    assert (args.sdd_nkd_gamma, args.sdd_nkd_T, args.sdd_nkd_warmup, args.sdd_M) == (2, 1, 1, '1,2,4')
    args = parse('catkd', model_t='resnet32x4', model_s='ShuffleV2')
    assert (args.gamma, args.alpha, args.beta, args.cat_resolution, args.cat_normalize) == (1, 0, 600, 4, 1)
    args = parse('CAT_KD', '--cat_normalize', '1', '-b', '3', model_t='vgg13', model_s='vgg8')
    assert (args.beta, args.cat_resolution, args.cat_normalize) == (3, 2, 1)


@pytest.mark.parametrize('name, flags, message', [
    ('sdd_kd', ['--sdd_M', '1,3'], "--sdd_M must be 1,2,4, 1,2 or 1"),
    ('sdd_dkd', ['--sdd_M', '2,4'], "--sdd_M must be 1,2,4, 1,2 or 1"),
    ('sdd_kd', ['--sdd_weight', '-1'], '--sdd_weight cannot be negative'),
    ('sdd_dkd', ['--dkd_beta', '-1'], '--dkd_beta cannot be negative'),
    ('sdd_nkd', ['--sdd_nkd_gamma', '-1'], '--sdd_nkd_gamma cannot be negative'),
    ('sdd_nkd', ['--sdd_nkd_T', '0'], '--sdd_nkd_T must be positive'),
    ('catkd', ['--cat_resolution', '0'], '--cat_resolution must be at least 1'),
])
def test_undefined_settings_are_refused(name, flags, message):
    with pytest.raises(KDZooError, match=message) as error:
        parse(name, *flags)
    assert '\n' not in str(error.value)


def test_the_teachers_pooled_map_comes_with_a_shared_pass():
    """A request for the pooled map is served from the merged passes as its own run_teacher would give it,
    beside a pre-ReLU request (the map is taken from the plain pass)."""
    teacher = build('cifar', 'wrn_16_1').float()
    batch = Batch(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), torch.arange(2))
    mine, other = TeacherRequest(True, False, pooled_map=True), TeacherRequest(True, True)
    passes = shared_passes([other, mine])
    outputs = [run_teacher(teacher, batch, p) for p in passes]
    alone = run_teacher(teacher, batch, mine)
    served = served_output(mine, passes, outputs)
    assert torch.equal(served.pooled_map, alone.pooled_map) and torch.equal(served.logits, alone.logits)
    assert torch.equal(alone.pooled_map, teacher.forward_features(batch.images))
    assert served_output(other, passes, outputs).pooled_map is None
    assert run_teacher(teacher, batch, other).pooled_map is None


@pytest.mark.slow
def test_pack_of_sdd_kd_sdd_dkd_catkd_equals_the_single_runs(tmp_path):
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    train_student.main([*common, '--model_s', 'resnet8', '--distill', 'sdd_kd,sdd_dkd,catkd',
                        '--save_root', str(tmp_path / 'pack')])
    single_runs(common, [('resnet8', 'sdd_kd'), ('resnet8', 'sdd_dkd'), ('resnet8', 'catkd')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
