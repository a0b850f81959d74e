"""What a run leaves behind to be read later: folder names that keep a table's cells apart, the recorded
settings and provenance (metrics.json, checkpoints), log.txt, and one real teacher -> student -> report chain."""
import json
import os
import re
import subprocess

import pytest
import torch

import train_student
import train_teacher
from dataset import build_data
from dataset.batches import fingerprint_files
from distiller_zoo import DISTILLERS
from distiller_zoo.base import Distiller
from distiller_zoo.flags import add_method_arguments
from helper import console
from models.weights import load_weights
from helper.errors import KDZooError
from helper.logger import RunLogger
from helper.provenance import git_state, state_dict_sha256
from helper.runtime import resolve_precision
from helper.run_files import MAX_FLAGS_CHARS, RunFiles, flag_parts
from models import model_dict
from models.registry import model_name_from_path
from tools import report

TEACHER = 'save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth'


def name(*flags, teacher=TEACHER, student='resnet8x4'):
    return train_student.run_name(train_student.parse_args(['--path_t', teacher, '--model_s', student, *flags]))


# ---- folder names -------------------------------------------------------------------------------------

def test_default_method_flags_keep_the_simkd_repo_name_and_others_are_added():
    assert name('--distill', 'simkd') == 'S:resnet8x4_T:resnet32x4_cifar100_simkd_r:0_a:0_b:1_0'
    assert name('--distill', 'simkd', '-f', '2') == 'S:resnet8x4_T:resnet32x4_cifar100_simkd_r:0_a:0_b:1_0'
    assert name('--distill', 'simkd', '-f', '8') == 'S:resnet8x4_T:resnet32x4_cifar100_simkd_r:0_a:0_b:1_f:8_0'
    assert (name('--distill', 'simkd', '-f', '4', '--trial', '3')
            == 'S:resnet8x4_T:resnet32x4_cifar100_simkd_r:0_a:0_b:1_f:4_3')
    # NORM's -s is --co-sponge (default 8); SemCKD's -s is --soft
    assert name('--distill', 'norm', '-s', '8') == 'S:resnet8x4_T:resnet32x4_cifar100_norm_r:0.1_a:0_b:1_0'
    assert name('--distill', 'norm', '-s', '4').endswith('_norm_r:0.1_a:0_b:1_co_sponge:4_0')
    assert name('--distill', 'semckd', '-s', '2').endswith('_b:400_s:2_0')
    assert name('--distill', 'crd', '--nce_k', '4096').endswith('_crd_r:1_a:0_b:0.8_nce_k:4096_0')
    assert name('--distill', 'kd', '--nce_k', '4096').endswith('_kd_r:0.1_a:0.9_b:0_0')  # kd does not read it
    assert name('--distill', 'kd', '--kd_T', '2').endswith('_kd_r:0.1_a:0.9_b:0_kd_T:2_0')
    assert name('--distill', 'hint', '--hint_layer', '1').endswith('_hint_r:1_a:0_b:100_hint_layer:1_0')
    assert name('--distill', 'norm', '--plain_ft').endswith('_co_sponge:8_plain_ft_0') is False
    assert name('--distill', 'norm', '--plain_ft').endswith('_b:1_plain_ft_0')


def test_defaults_are_the_methods_own_for_the_pair():
    # DKD's NCKD weight is 8 for this pair (mdistiller): passing 8 is the default, 2 is not
    assert name('--distill', 'dkd', '--dkd_beta', '8').endswith('_dkd_r:1_a:0_b:1_0')
    assert name('--distill', 'dkd', '--dkd_beta', '2').endswith('_dkd_r:1_a:0_b:1_dkd_beta:2_0')
    assert name('--distill', 'dkd', '--dkd_beta', '2', teacher='x/resnet56_vanilla/resnet56_best.pth',
                student='resnet20').endswith('_dkd_r:1_a:0_b:1_0')  # resnet56 -> resnet20: mdistiller's 2
    # ND's tuned values for the pair are the '++' defaults (DKD++ here: dkd_alpha 2, nd_weight 0.5)
    assert name('--distill', 'dkd++', '--dkd_alpha', '2').endswith('_dkd++_r:1_a:0_b:1_0')
    assert name('--distill', 'dkd++', '--nd_weight', '1').endswith('_dkd++_r:1_a:0_b:1_nd_weight:1_0')


def test_folder_names_still_name_the_student():
    folder = name('--distill', 'simkd', '-f', '8')
    assert model_name_from_path(f'save/students/models/{folder}/resnet8x4_best.pth') == 'resnet8x4'
    assert model_name_from_path(f'save/students/models/{name("--distill", "norm", "-s", "4")}/x.pth') == 'resnet8x4'


def test_a_run_with_other_method_flags_is_not_refused(tmp_path):
    for flags in (['-f', '8'], ['-f', '4'], []):
        args = train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '--distill', 'simkd',
                                         '--save_root', str(tmp_path), *flags])
        files = RunFiles(str(tmp_path), 'students', train_student.run_name(args), 'resnet8x4')
        files.refuse_overwrite(None, False)
        os.makedirs(files.folder)
        open(files.last, 'w').close()
    assert len(os.listdir(tmp_path / 'students' / 'models')) == 3
    with pytest.raises(KDZooError, match='already holds a run'):
        files.refuse_overwrite(None, False)


def test_long_flag_lists_become_a_hash():
    short = flag_parts([('f', 8), ('plain_ft', True), ('mkl_factors', (2.0, 1.5))])
    assert short == '_f:8_plain_ft_mkl_factors:2,1.5'
    long = flag_parts([(f'flag{i}', 1000.5 + i) for i in range(20)])
    assert re.fullmatch(r'_flags:[0-9a-f]{12}', long) and len(long) < MAX_FLAGS_CHARS


def test_every_registered_method_lists_the_flags_it_reads():
    parser = train_student.build_parser()
    flags = {name: set(cls.flag_dests(parser)) for name, cls in DISTILLERS.items()}
    assert flags['kd'] == {'kd_T', 'logit_stand', 'ls_base_temp', 'ls_kd_weight', 'ls_std'}  # LS's with its own
    assert not {'logit_stand', 'ls_base_temp'} & flags['crd']  # LS is not defined for a feature method
    assert flags['simkd'] == {'kd_T', 'factor'} and flags['semckd'] == {'kd_T', 'soft'}
    assert {'nce_k', 'feat_dim', 'mode', 'crd_bank'} <= flags['crd'] and {'nce_k', 'ceta'} <= flags['norm_crd']
    assert flags['norm_kd'] == flags['norm'] == {'kd_T', 'ceta', 'co_sponge', 'plain_ft', 'no_logit_norm'}
    # the '++' methods: ND's flags (added once, by kd++) and their base method's
    assert {'nd_weight', 'nd_warmup', 'dist_tau', 'dist_beta'} <= flags['dist++']
    assert {'nd_weight', 'dkd_alpha', 'dkd_beta'} <= flags['dkd++']
    assert {'mkl_T', 'mkl_factors'} <= flags['ntce'] and 'init_epochs' in flags['abound']
    assert all('hint_layer' not in f for n, f in flags.items() if n != 'hint')


def test_a_flag_moved_into_its_method_still_names_the_folder():
    """A flag a method adds in its own add_arguments names the folder, for its variants too."""
    class Toy(Distiller):
        @classmethod
        def add_arguments(cls, parser):
            if cls is not Toy:  # one class adds the flags its variants share
                return
            parser.add_argument_group('toy').add_argument('-q', '--toy_factor', type=int, default=2)

    class ToyVariant(Toy):
        pass

    parser = add_method_arguments(train_student.build_parser(), {'toy': Toy, 'toy2': ToyVariant})
    assert train_student.method_flags(ToyVariant, parser) == {'kd_T': 'kd_T', 'toy_factor': 'q'}
    assert DISTILLERS['simkd'].flag_dests(parser) == ['kd_T', 'factor']  # the others' flags are unchanged


def test_dist_defaults_are_the_official_configs():
    args = train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '--distill', 'dist'])
    assert (args.gamma, args.alpha, args.beta, args.dist_tau, args.dist_beta, args.dist_gamma) == (1, 0, 2, 4, 1, 1)
    args = train_student.parse_args(['--path_t', 'x/ResNet34_vanilla/r.pth', '--model_s', 'ResNet18', '--dataset',
                                     'imagenet', '--distill', 'dist'])
    assert (args.gamma, args.alpha, args.beta, args.dist_tau) == (1, 0, 2, 1)


# ---- provenance ---------------------------------------------------------------------------------------

def test_weights_hash_is_the_weights_not_the_file(tmp_path):
    net = model_dict['resnet8'](num_classes=10)
    torch.save({'model': net.state_dict(), 'epoch': 3}, tmp_path / 'plain.pth')
    torch.save({'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}}, tmp_path / 'dp.pth')
    hashes = []
    for path in ('plain.pth', 'dp.pth'):
        fresh = model_dict['resnet8'](num_classes=10)
        load_weights(fresh, str(tmp_path / path), 'resnet8')
        hashes.append(state_dict_sha256(fresh.state_dict()))
    assert hashes[0] == hashes[1] == state_dict_sha256(net.state_dict())
    with torch.no_grad():
        net.fc.bias[0] += 1e-6
    assert state_dict_sha256(net.state_dict()) != hashes[0]
    assert state_dict_sha256({'w': torch.ones(3, dtype=torch.bfloat16)}) != state_dict_sha256({'w': torch.ones(3)})


def test_git_state_here_elsewhere_and_without_git(tmp_path, monkeypatch):
    here = git_state()
    if here is not None:  # a git checkout (a release tarball has none)
        assert re.fullmatch(r'[0-9a-f]{40}', here['commit']) and here['dirty'] in (True, False)
    assert git_state(str(tmp_path)) is None

    def no_git(*args, **kwargs):
        raise FileNotFoundError(2, 'No such file or directory', 'git')
    monkeypatch.setattr(subprocess, 'run', no_git)
    assert git_state(str(tmp_path / 'elsewhere')) is None


def test_data_fingerprints(tmp_path):
    a = build_data('digits', '.', 64, 'cpu').fingerprint
    assert a == build_data('digits', '.', 128, 'cpu').fingerprint and re.fullmatch(r'[0-9a-f]{64}', a['sha256'])
    assert 'first and last' in a['method']
    from conftest import write_fake_cifar100
    one = build_data('cifar100', write_fake_cifar100(str(tmp_path / 'one'), seed=0), 64, 'cpu', download=False)
    two = build_data('cifar100', write_fake_cifar100(str(tmp_path / 'two'), seed=1), 64, 'cpu', download=False)
    assert one.fingerprint['sha256'] != two.fingerprint['sha256']
    files = []
    for i in range(3):
        path = tmp_path / 'img' / f'c{i}' / 'x.jpg'
        path.parent.mkdir(parents=True)
        path.write_bytes(b'x' * (i + 1))
        files.append((str(path), i))
    before = fingerprint_files(str(tmp_path / 'img'), files[:2], files[2:])
    assert before == fingerprint_files(str(tmp_path / 'img'), files[:2], files[2:])
    assert before != fingerprint_files(str(tmp_path / 'img'), files[:2][::-1], files[2:])


# ---- log.txt ------------------------------------------------------------------------------------------

def test_log_holds_early_lines_errors_and_appends_on_resume(tmp_path, capsys):
    path = tmp_path / 'log.txt'
    with pytest.raises(KDZooError):
        with console.capture():
            print('refused')
            console.attach(str(path), fresh=True)
            raise KDZooError('refused before training')  # a refused command writes nothing
    assert not path.exists()
    with pytest.raises(KDZooError):
        with console.capture():
            print('before the folder exists')
            console.attach(str(path), fresh=True)
            console.commit()  # training starts
            print('after', end='')
            print(' it')
            console.log_only('only in the log')
            raise KDZooError('something to fix')
    out = capsys.readouterr().out
    assert 'before the folder exists' in out and 'only in the log' not in out
    before = path.read_text()
    with pytest.raises(KDZooError):
        with console.capture():
            console.attach(str(path))
            print('resuming')
            raise KDZooError('the run already finished')  # refused before training: the log stays as it was
    assert path.read_text() == before
    with console.capture():
        console.attach(str(path))
        console.commit()  # training starts
        print('resumed')
    lines = path.read_text().splitlines()
    assert [re.sub(r'^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ', '', line) for line in lines] == [
        'before the folder exists', 'after it', 'only in the log', 'error: something to fix', 'resumed']
    with console.capture():
        console.attach(str(path), fresh=True)  # --overwrite
        console.commit()
        print('afresh')
    assert path.read_text().splitlines()[0].endswith('] afresh')


def test_step_lines_go_to_stdout_only_where_it_is_not_a_terminal(tmp_path, monkeypatch):
    class Progress:
        def __init__(self):
            self.written = []

        def write(self, line):
            self.written.append(line)

    args = train_teacher.parse_args(['--model', 'resnet8', '--dataset', 'digits', '--save_root', str(tmp_path)])
    files = RunFiles(str(tmp_path), 'teachers', 'resnet8_vanilla', 'resnet8')
    with console.capture():
        files.create()
        console.commit()
        logger = RunLogger(files, args, 1, tensorboard=False)
        progress = Progress()
        logger.step('line for a batch job', progress)
        monkeypatch.setattr(type(__import__('sys').stdout), 'isatty', lambda self: True)
        logger.step('line under a progress bar', progress)
    assert progress.written == ['line for a batch job']
    log = open(files.log).read()
    assert 'line under a progress bar' in log and 'arguments: {' in log and 'run: {"kind": "teacher"' in log


# ---- one real chain -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_teacher_student_report_on_digits(tmp_path, capsys):
    save = str(tmp_path / 'save')
    common = ['--dataset', 'digits', '--epochs', '1', '--precision', 'fp32', '--print_freq', '10',
              '--save_root', save, '--deterministic']
    train_teacher.main(['--model', 'resnet8', *common])
    teacher = os.path.join(save, 'teachers', 'models', 'resnet8_vanilla_digits_trial_0')
    train_student.main(['--path_t', os.path.join(teacher, 'resnet8_best.pth'), '--model_s', 'resnet8',
                        '--distill', 'kd', '--kd_T', '2', *common])
    out = capsys.readouterr().out
    assert re.search(r'epoch 1 step 10/23  loss [\d.]+ \(ce [\d.]+, kd [\d.]+\)  top-1 [\d.]+%  lr 0\.05  '
                     r'\d+ img/s  eta \d+m\d\ds', out)  # stdout is no terminal here: the step lines are printed
    folder = os.path.join(save, 'students', 'models', 'S:resnet8_T:resnet8_digits_kd_r:0.1_a:0.9_b:0_kd_T:2_0')
    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    trained = json.load(open(os.path.join(teacher, 'metrics.json')))
    prov = metrics['provenance']
    assert prov['precision'] == 'fp32' and prov['memory_format'] == 'contiguous' and prov['processes'] == 1
    assert prov['device'].startswith('CPU') and prov['versions']['torch'] == torch.__version__
    assert prov['data'] == trained['provenance']['data'] and len(prov['data']['sha256']) == 64
    assert prov['git'] == git_state()
    assert prov['teacher']['sha256'] == trained['weights_sha256']['best']
    assert prov['command'][0] == os.path.basename(__import__('sys').argv[0])
    assert metrics['run']['settings']['kd_T'] == 2.0 and metrics['run']['defaults']['kd_T'] == 4
    last = torch.load(os.path.join(folder, 'resnet8_last.pth'), weights_only=True)
    assert last['provenance'] == prov
    log = open(os.path.join(folder, 'log.txt')).read()
    for text in ('note: no CUDA device found', 'teacher resnet8: top-1', 'arguments: {', 'provenance: {',
                 'epoch 1 step 20/23', 'epoch 1/1  lr 0.05', 'student resnet8: last top-1'):
        assert text in log, text

    tables = report.main(['--save_root', save])
    out = capsys.readouterr().out
    students = next(t for t in tables if t.kind == 'student')
    # --precision fp32 is named only where it departs from what 'auto' gives on this CPU (bf16 with native support)
    auto = resolve_precision('auto', torch.device('cpu'))
    recipe = 'epochs=1 precision=fp32' if auto != 'fp32' else 'epochs=1'
    assert students.recipe == recipe
    column = students.columns[0]
    assert students.rows['Teacher'][column][0].values['last'] == pytest.approx(metrics['args']['teacher_top1'])
    assert students.rows['Student'][column][0].values['last'] == trained['last']['top1']
    assert students.rows['kd kd_T=2'][column][0].values['last'] == metrics['last']['top1']
    assert f'# Students (train_student.py): digits, {recipe}' in out
