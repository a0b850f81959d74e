"""Habits the seeds' users bring: RepDistiller's -t, mdistiller's --distill spellings and mobile_half, its eval
flags, CIFAR-10, and the README's commands as written."""
import glob
import os
import pickle
import re
import shlex

import numpy as np
import pytest
import torch

import train_online_mcl
import train_student
import train_teacher
from conftest import REPO, write_fake_cifar10
from dataset import build_data
from dataset import cifar10
from helper.errors import DatasetError, KDZooError
from tools import eval as eval_tool

TEACHER = './save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth'


# ---- RepDistiller's -t ----------------------------------------------------------------------------

def test_t_is_trial_in_every_script():
    assert train_teacher.parse_args(['--model', 'resnet8', '-t', '3']).trial == '3'
    assert train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '-t', '2']).trial == '2'
    assert train_online_mcl.parse_args(['--arch', 'lmcl_resnet32_cifar', '-t', '5']).trial == '5'


# ---- --distill in any case ------------------------------------------------------------------------

@pytest.mark.parametrize('given, registered', [
    ('KD', 'kd'), ('DKD', 'dkd'), ('NTCE', 'ntce'), ('ReviewKD', 'reviewkd'), ('CRD', 'crd'), ('Kd++', 'kd++'),
    ('NORM', 'NORM'), ('norm', 'norm'), ('FITNET', 'hint'), ('AT', 'attention'), ('SP', 'similarity'),
])
def test_distill_names_in_any_case(given, registered):
    args = train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '--distill', given])
    assert args.distill == registered


def test_distill_case_reaches_the_methods_own_flag_rewriting():
    # NORM's repo spells -c/-s as its own flags; the rewrite must apply to 'Norm' as to 'NORM'
    args = train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '--distill', 'Norm',
                                     '-s', '2'])
    plain = train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '--distill', 'NORM',
                                      '-s', '2'])
    assert vars(args) == vars(plain) | {'distill': args.distill}


@pytest.mark.parametrize('given, suggestion', [('DKDD', 'dkd'), ('reviewkd+', 'reviewkd'), ('ntc', 'ntce')])
def test_unknown_distill_suggests_whatever_the_case(given, suggestion):
    with pytest.raises(KDZooError, match=rf"unknown --distill '{re.escape(given)}' \(did you mean [^)]*\b"
                                         rf"{re.escape(suggestion)}\b"):
        train_student.parse_args(['--path_t', TEACHER, '--model_s', 'resnet8x4', '--distill', given])


# ---- mobile_half --------------------------------------------------------------------------------

def test_mobile_half_runs_as_mobilenetv2_with_its_lr_rule():
    args = train_student.parse_args(['--path_t', TEACHER, '--model_s', 'mobile_half', '--distill', 'DKD'])
    assert args.model_s == 'MobileNetV2' and args.learning_rate == 0.01
    assert train_teacher.parse_args(['--model', 'mobile_half']).model == 'MobileNetV2'
    folder = train_student.run_name(args)
    assert folder.startswith('S:MobileNetV2_T:resnet32x4_cifar100_dkd_')


# ---- tools/eval.py with mdistiller's flags ------------------------------------------------------

def test_eval_without_a_checkpoint_reads_the_teacher_in_the_save_layout(tmp_path):
    save = tmp_path / 'save'
    train_teacher.main(['--model', 'resnet8', '--dataset', 'digits', '--epochs', '1', '--deterministic',
                        '--save_root', str(save)])
    result = eval_tool.main(['-m', 'resnet8', '-d', 'digits', '-bs', '100', '--save_root', str(save)])
    assert result['path'] == str(save / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0' / 'resnet8_best.pth')
    pretrain = eval_tool.main(['-m', 'resnet8', '-c', 'pretrain', '-d', 'digits', '--save_root', str(save)])
    assert pretrain['top1'] == result['top1']
    with pytest.raises(KDZooError, match=r"no resnet20 teacher at .*resnet20_vanilla_digits_trial_0/resnet20_best"
                                         r".pth'; "
                                         r"pass -c <file>, fetch the published teachers with `bash "
                                         r"scripts/fetch_teachers.sh`"):
        eval_tool.main(['-m', 'resnet20', '-d', 'digits', '--save_root', str(save)])


# ---- CIFAR-10 ---------------------------------------------------------------------------------

def test_cifar10_reads_the_five_training_batches_and_the_test_batch(fake_cifar10):
    data = build_data('cifar10', fake_cifar10, 20, 'cpu', download=False, val_batch_size=50)
    assert (data.num_classes, data.num_train, len(data.val)) == (10, 100, 1)
    folder = os.path.join(fake_cifar10, 'cifar-10-batches-py')
    rows, labels = [], []
    for i in range(1, 6):
        with open(os.path.join(folder, f'data_batch_{i}'), 'rb') as f:
            entry = pickle.load(f, encoding='bytes')
        rows.append(entry[b'data'])
        labels += entry[b'labels']
    expected = np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert torch.equal(data.train.images.cpu(), torch.from_numpy(np.ascontiguousarray(expected)))
    assert data.train_labels.tolist() == labels
    batch = next(iter(data.val))
    assert batch.images.shape == (50, 3, 32, 32) and set(batch.targets.tolist()) == set(range(10))
    # normalised with CIFAR-10's own statistics
    with open(os.path.join(folder, 'test_batch'), 'rb') as f:
        first = np.asarray(pickle.load(f, encoding='bytes')[b'data'][0], np.float32).reshape(3, 32, 32) / 255
    mean, std = np.array(cifar10.MEAN)[:, None, None], np.array(cifar10.STD)[:, None, None]
    assert np.allclose(batch.images[0].numpy(), (first - mean) / std, atol=1e-5)


def test_cifar10_teacher_trains_and_lands_in_its_own_folder(tmp_path, fake_cifar10):
    state = train_teacher.main(['--model', 'resnet8', '--dataset', 'cifar10', '--data_folder', fake_cifar10,
                                '--epochs', '1', '--batch_size', '25', '--deterministic', '--save_root',
                                str(tmp_path / 'save')])
    assert len(state['history']) == 1
    path = tmp_path / 'save' / 'teachers' / 'models' / 'resnet8_vanilla_cifar10_trial_0' / 'resnet8_best.pth'
    assert torch.load(path, weights_only=True)['model']['fc.weight'].shape == (10, 64)


def test_cifar10_missing_or_broken_is_one_line(tmp_path):
    with pytest.raises(DatasetError) as err:
        build_data('cifar10', str(tmp_path / 'nowhere'), 8, 'cpu', download=False)
    assert str(tmp_path / 'nowhere' / 'cifar-10-batches-py') in str(err.value) and cifar10.URL in str(err.value)
    root = write_fake_cifar10(str(tmp_path / 'data'))
    path = os.path.join(root, 'cifar-10-batches-py', 'data_batch_3')
    with open(path, 'wb') as f:
        pickle.dump({b'data': np.zeros((1, 3072), np.uint8), b'labels': [10]}, f)
    with pytest.raises(DatasetError, match=r"CIFAR-10 file .*data_batch_3 does not hold N x 3072 images with labels "
                                           r"0..9; delete the 'cifar-10-batches-py' folder"):
        build_data('cifar10', root, 8, 'cpu', download=False)


def test_cifar10_archive_is_checked_against_its_md5(tmp_path):
    archive = tmp_path / 'cifar-10-python.tar.gz'
    archive.write_bytes(b'not the archive')
    with pytest.raises(DatasetError, match=r'has MD5 [0-9a-f]{32}, expected c58f30108f718f92721af3b95e74349a'):
        build_data('cifar10', str(tmp_path), 8, 'cpu')
    assert not archive.exists()


# ---- the README as written ---------------------------------------------------------------------

def readme_commands():
    """The README's text, and the python commands of the README and docs/ (whose examples it points to)."""
    text = open(os.path.join(REPO, 'README.md')).read()
    docs = ''.join(open(path).read() for path in sorted(glob.glob(os.path.join(REPO, 'docs', '*.md'))))
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text + docs, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split(' #')[0].strip()
            if line.startswith('python '):
                commands.append(shlex.split(line))
    return text, commands


def test_readme_says_to_activate_the_venv_before_its_python_commands():
    text, _ = readme_commands()
    quickstart = text.index('bash scripts/quickstart.sh')
    activate = text.index('source .venv/bin/activate')
    first_python = text.index('\npython ')
    assert quickstart < activate < first_python


PARSERS = {'train_teacher.py': train_teacher.parse_args, 'train_student.py': train_student.parse_args,
           'train_online_mcl.py': train_online_mcl.parse_args, 'tools/eval.py': eval_tool.parse_args}


def test_readme_commands_parse_as_written():
    _, commands = readme_commands()
    checked = 0
    for words in commands:
        if words[1] in PARSERS and not any('<' in w for w in words):
            PARSERS[words[1]](words[2:])
            checked += 1
    assert checked >= 12
