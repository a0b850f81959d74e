"""USKD (online/uskd.py) against a float64 transcription of the official USKDLoss (yzd-v/cls_KD
mmcls/models/dis_losses/uskd.py): value and gradient, the log-probability ranking and the paper's form, the
official configs' defaults and recipe, the weak head's input, and the one-line errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import train_online_mcl
import train_student
from helper.errors import KDZooError
from online import ONLINE_METHODS
from online.uskd import uskd_terms


def official(fea_mid, weight, bias, logit_s, gt_label, alpha, beta, mu, paper_rank=False):
    """USKDLoss.forward for hard labels, statement by statement (``self.fc`` is ``weight``/``bias``; the Zipf
    vector on the CPU). ``paper_rank``: the ranking on probabilities instead of the reused log-probabilities."""
    N, c = logit_s.shape
    zipf = 1 / torch.arange(1, c + 1, dtype=logit_s.dtype)
    label = gt_label.view(len(gt_label), 1)
    value = torch.ones_like(label)
    s_i = F.softmax(logit_s, dim=1)
    s_t = torch.gather(s_i, 1, label)
    p_t = s_t ** 2
    p_t = p_t + value - p_t.mean(0, True)
    p_t[value == 0] = 0
    p_t = p_t.detach()
    if paper_rank:
        s_prob, s_prob_t = s_i, s_t
    s_i = F.log_softmax(logit_s, dim=1)
    s_t = torch.gather(s_i, 1, label)
    loss_t = - (p_t * s_t).sum(dim=1).mean()
    target = torch.zeros_like(logit_s).scatter_(1, label, 0.9) + 0.1 * torch.ones_like(logit_s) / c
    w_fc = fea_mid @ weight.T + bias
    w_i = F.log_softmax(w_fc, dim=1)
    loss_weak = - (mu * target * w_i).sum(dim=1).mean()
    w_i = F.softmax(w_fc, dim=1)
    w_t = torch.gather(w_i, 1, label)
    if paper_rank:
        rank = w_i / (1 - w_t.sum(1, True) + 1e-6) + s_prob / (1 - s_prob_t.sum(1, True) + 1e-6)
    else:
        rank = w_i / (1 - w_t.sum(1, True) + 1e-6) + s_i / (1 - s_t.sum(1, True) + 1e-6)
    _, rank = torch.sort(rank, descending=True, dim=-1)
    z_i = zipf.repeat(N, 1)
    ids_sort = torch.argsort(rank)
    z_i = torch.gather(z_i, dim=1, index=ids_sort)
    mask = torch.ones_like(logit_s).scatter_(1, label, 0).bool()
    logit_s = logit_s[mask].reshape(N, -1)
    ns_i = F.log_softmax(logit_s, dim=1)
    nz_i = z_i[mask].reshape(N, -1)
    nz_i = nz_i / nz_i.sum(dim=1, keepdim=True)
    nz_i = nz_i.detach()
    loss_non = - (nz_i * ns_i).sum(dim=1).mean()
    return alpha * loss_t + beta * loss_non + loss_weak


def inputs(seed, n=8, c=12, d=5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    fea = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(c, d, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(c, generator=g, dtype=torch.float64).requires_grad_()
    logits = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g)
    return fea, weight, bias, logits, labels


@pytest.mark.parametrize('paper_rank', [False, True])
@pytest.mark.parametrize('weights', [(0.1, 0.1, 0.1), (1.0, 0.1, 0.005)])
def test_value_and_gradients_match_the_official_loss(paper_rank, weights):
    for seed in range(3):
        fea, weight, bias, logits, labels = inputs(seed)
        ref = official(fea, weight, bias, logits, labels, *weights, paper_rank=paper_rank)
        terms = uskd_terms(fea @ weight.T + bias, logits, labels, *weights, rank_probs=paper_rank)
        ours = sum(terms.values())
        assert ours.dtype == torch.float64
        assert abs(ours.item() - ref.item()) < 1e-12 * max(1.0, abs(ref.item()))
        for a, b in zip(torch.autograd.grad(ours, (fea, weight, bias, logits)),
                        torch.autograd.grad(ref, (fea, weight, bias, logits))):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_the_official_ranking_differs_from_the_papers():
    """The two forms give other non-target labels (so other losses) on most batches; each reference agrees
    only with its own form."""
    differ = 0
    for seed in range(5):
        fea, weight, bias, logits, labels = inputs(seed, scale=4.0)
        weak = fea @ weight.T + bias
        code = sum(uskd_terms(weak, logits, labels, 0.1, 0.1, 0.1).values()).item()
        paper = sum(uskd_terms(weak, logits, labels, 0.1, 0.1, 0.1, rank_probs=True).values()).item()
        differ += abs(code - paper) > 1e-9
        assert code == pytest.approx(official(fea, weight, bias, logits, labels, 0.1, 0.1, 0.1).item(), rel=1e-12)
    assert differ >= 3


def test_hand_computed_target_term():
    """Two samples, two classes, equal logits: s_y = 1/2, p_t = 1/4 + 1 - 1/4 = 1, so the target term is log 2."""
    logits = torch.zeros(2, 2, dtype=torch.float64)
    terms = uskd_terms(torch.zeros(2, 2, dtype=torch.float64), logits, torch.tensor([0, 1]), 1.0, 1.0, 1.0)
    assert terms['uskd_target'].item() == pytest.approx(math.log(2.0), rel=1e-14)
    # one non-target class: its label is 1 and its log-softmax 0
    assert terms['uskd_nontarget'].item() == pytest.approx(0.0, abs=1e-15)


def parse(*flags):
    return train_online_mcl.parse_args(['--uskd', *flags])


def test_defaults_are_the_official_configs():
    args = parse('--arch', 'resnet32')
    assert (args.uskd_alpha, args.uskd_beta, args.uskd_mu, args.uskd_layer) == (0.1, 0.1, 0.1, -3)
    assert (args.epochs, args.batch_size, args.learning_rate, args.weight_decay, args.lr_decay_epochs,
            args.lr_decay, args.nesterov) == (200, 128, 0.1, 1e-4, [100, 150], 'step', False)
    args = parse('--arch', 'ResNet18', '--dataset', 'imagenet')
    assert (args.uskd_alpha, args.uskd_beta, args.uskd_mu) == (1.0, 0.1, 0.005)
    assert parse('--arch', 'resnet32_cifar').peers == ['resnet32']


def test_the_weak_head_reads_the_stage_before_the_last():
    args = parse('--arch', 'resnet8', '--dataset', 'digits')
    torch.manual_seed(0)
    method = ONLINE_METHODS['uskd'].build(args, 10)
    assert method.weak.in_features == 32  # resnet8: 16, 16, 32, 64 channels; -3 is the 32-channel stage
    assert [m is method.weak or m is method.model for m in method.trainable_modules()] == [True, True]
    batch = type('B', (), dict(images=torch.randn(4, 3, 32, 32), targets=torch.tensor([0, 1, 2, 3])))()
    logits, losses = method.step(batch, 1)
    assert sorted(losses) == ['ce', 'uskd_nontarget', 'uskd_target', 'uskd_weak'] and logits.shape == (4, 10)


@pytest.mark.parametrize('flags, says', [
    (['--arch', 'lmcl_resnet32_cifar'], 'give its name in --arch'),
    (['--arch', 'resnet32', '--uskd_mu', '-1'], '--uskd_mu cannot be negative'),
    (['--arch', 'resnet32', '--uskd_alpha', '-0.1'], '--uskd_alpha cannot be negative'),
])
def test_bad_flags_are_one_line(flags, says):
    with pytest.raises(KDZooError) as err:
        parse(*flags)
    assert says in str(err.value) and '\n' not in str(err.value)


def test_a_layer_out_of_range_is_one_line():
    args = parse('--arch', 'resnet8', '--uskd_layer', '9')
    with pytest.raises(KDZooError, match='--uskd_layer 9 is out of range for resnet8'):
        ONLINE_METHODS['uskd'].build(args, 100)


@pytest.mark.parametrize('distill', ['uskd', 'USKD', 'kd,uskd:r=1'])
def test_train_student_says_where_uskd_lives(distill):
    with pytest.raises(KDZooError) as err:
        train_student.parse_args(['--path_t', 'vgg13.pth', '--model_s', 'vgg8', '--distill', distill])
    text = str(err.value)
    assert 'python train_online_mcl.py --uskd --arch' in text and '\n' not in text


@pytest.mark.slow
def test_a_run_saves_the_plain_network_and_reads_back_in_the_report(tmp_path, capsys):
    """One epoch on a few digits: the run folder, the plain network in <model>_last.pth, and tools/report.py's
    row 'uskd' in the column of its network, beside the --baseline runs."""
    from tools import report
    from conftest import first_digits
    with pytest.MonkeyPatch.context() as patch:
        first_digits(patch, 64, 32)
        common = ['--arch', 'resnet8', '--dataset', 'digits', '--epochs', '1', '--batch_size', '16',
                  '--deterministic', '--save_root', str(tmp_path)]
        train_online_mcl.main([*common, '--uskd'])
        train_online_mcl.main([*common, '--baseline'])
    folder = tmp_path / 'online' / 'models' / 'resnet8_uskd_digits_trial_0'
    last = torch.load(folder / 'resnet8_last.pth', weights_only=True)
    assert not any(key.startswith('weak') for key in last['model'])
    assert set(last['kdzoo']['objective']) == {'weak.weight', 'weak.bias'}
    capsys.readouterr()
    tables = report.main(['--save_root', str(tmp_path)])
    online = [t for t in tables if t.kind == 'online']
    assert [list(t.rows) for t in online] == [['Baseline', 'uskd']]
    assert [online[0].headers[c] for c in online[0].columns] == ['resnet8 (resnet8)']
