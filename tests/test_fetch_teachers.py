"""scripts/fetch_teachers.sh and tools/fetch_teachers.py on archives and weight files built here (no network):
layout, conversion, checksums, refusals, and the one-line errors of the shell script."""
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from conftest import REPO
from models.weights import load_weights
from helper.errors import CheckpointError, KDZooError
from models import imagenet_model_dict, model_dict
from models.registry import model_name_from_path
from tools import fetch_teachers as fetch


def repdistiller_checkpoint(model, accuracy=71.5):
    """Bytes of a teacher file as RepDistiller's train_teacher.py saved them (the files in mdistiller's
    archive): epoch, model, a numpy-scalar accuracy and the optimiser."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    buffer = io.BytesIO()
    torch.save({'epoch': 240, 'model': model.state_dict(), 'accuracy': np.float64(accuracy),
                'optimizer': optimizer.state_dict()}, buffer)
    return buffer.getvalue()


def write_archive(folder, members):
    """cifar_teachers.tar with mdistiller's layout: cifar_teachers/<model>_vanilla/ckpt_epoch_240.pth."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, 'cifar_teachers.tar')
    with tarfile.open(path, 'w') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cifar_mirror(tmp_path, monkeypatch):
    """A mirror folder holding a two-teacher cifar_teachers.tar (small teachers: the real archive's six are
    hundreds of MB); resnet56's member hash is pinned as resnet32x4's is in the real table."""
    torch.manual_seed(0)
    nets = {'resnet56': model_dict['resnet56'](num_classes=100), 'resnet110': model_dict['resnet110'](num_classes=100)}
    data = {name: repdistiller_checkpoint(net, accuracy) for (name, net), accuracy in zip(nets.items(), (72.3, 74.3))}
    mirror = tmp_path / 'mirror'
    write_archive(mirror, {fetch.CIFAR_MEMBER.format(name): blob for name, blob in data.items()})
    monkeypatch.setattr(fetch, 'CIFAR_TEACHERS', tuple(nets))
    monkeypatch.setattr(fetch, 'CIFAR_MEMBER_SHA256', {'resnet56': hashlib.sha256(data['resnet56']).hexdigest()})
    return mirror, nets, data


def test_cifar_archive_installs_teachers_in_kdzoos_layout(tmp_path, cifar_mirror):
    mirror, nets, data = cifar_mirror
    save = tmp_path / 'save'
    # a file:// base URL takes the download path (urllib, .part file, downloads/ folder) without a network
    installed = fetch.main(['cifar', '--mirror', mirror.as_uri(), '--save_root', str(save)])
    x = torch.randn(2, 3, 32, 32)
    for name, net in nets.items():
        path = save / 'teachers' / 'models' / f'{name}_vanilla' / f'{name}_best.pth'
        assert str(path) in installed
        # the path train_teacher.py --trial 0 writes and the table scripts' `teacher` function names
        assert model_name_from_path(str(path)) == name
        saved = torch.load(path, weights_only=True)  # plain kdzoo checkpoint: no pickled numpy left
        assert saved['epoch'] == 240 and saved['source_sha256'] == hashlib.sha256(data[name]).hexdigest()
        assert saved['source'].endswith(f':cifar_teachers/{name}_vanilla/ckpt_epoch_240.pth')
        loaded = model_dict[name](num_classes=100)
        load_weights(loaded, str(path), name)
        assert torch.equal(loaded.eval()(x), net.eval()(x))
    assert torch.load(save / 'teachers' / 'models' / 'resnet56_vanilla' / 'resnet56_best.pth',
                      weights_only=True)['best_acc'] == pytest.approx(72.3)
    sums = (save / 'teachers' / 'SHA256SUMS').read_text().splitlines()
    member = 'cifar_teachers/resnet110_vanilla/ckpt_epoch_240.pth'
    assert f"{hashlib.sha256(data['resnet110']).hexdigest()}  {member}" in sums
    assert not any((save / 'teachers' / 'downloads').iterdir())  # the archive copy is removed once installed


def test_common_sh_teacher_path_is_where_the_fetch_puts_it():
    out = subprocess.run(['bash', '-c', f'source {REPO}/scripts/common.sh; teacher resnet32x4'], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert os.path.normpath(out) == os.path.normpath(fetch.teacher_path('./save', 'resnet32x4', 'cifar100'))
    # CIFAR's ResNet50 (RepDistiller's) and ImageNet's (torchvision's) never share a folder
    assert fetch.teacher_path('s', 'ResNet50', 'cifar100') != fetch.teacher_path('s', 'ResNet50', 'imagenet')


def test_existing_teachers_are_kept_unless_forced(tmp_path, cifar_mirror):
    mirror, _, _ = cifar_mirror
    save = tmp_path / 'save'
    target = save / 'teachers' / 'models' / 'resnet56_vanilla' / 'resnet56_best.pth'
    target.parent.mkdir(parents=True)
    target.write_bytes(b'my own teacher')
    fetch.main(['cifar', '--mirror', str(mirror), '--save_root', str(save)])
    assert target.read_bytes() == b'my own teacher'
    assert (save / 'teachers' / 'models' / 'resnet110_vanilla' / 'resnet110_best.pth').is_file()
    fetch.main(['cifar', '--mirror', str(mirror), '--save_root', str(save), '--force'])
    assert torch.load(target, weights_only=True)['epoch'] == 240


def test_member_with_the_wrong_pinned_hash_is_refused(tmp_path, cifar_mirror, monkeypatch):
    mirror, _, _ = cifar_mirror
    monkeypatch.setattr(fetch, 'CIFAR_MEMBER_SHA256', {'resnet56': '0' * 64})
    with pytest.raises(CheckpointError, match=r"resnet56_vanilla/ckpt_epoch_240.pth' in .* has SHA-256 [0-9a-f]{64}, "
                                              r"expected 0{64}; the archive is not the published one"):
        fetch.main(['cifar', '--mirror', str(mirror), '--save_root', str(tmp_path / 'save')])
    assert not (tmp_path / 'save' / 'teachers' / 'models' / 'resnet56_vanilla').exists()


def test_archive_without_the_teachers_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / 'mirror'
    write_archive(mirror, {'cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth': b'x'})
    monkeypatch.setattr(fetch, 'CIFAR_TEACHERS', ('resnet56', 'vgg13'))
    monkeypatch.setattr(fetch, 'CIFAR_MEMBER_SHA256', {})
    with pytest.raises(CheckpointError, match=r"lacks cifar_teachers/vgg13_vanilla/ckpt_epoch_240.pth; it is not "
                                              r"mdistiller's cifar_teachers.tar"):
        fetch.main(['cifar', '--mirror', str(mirror), '--save_root', str(tmp_path / 'save')])


class NotAWeight:
    """A pickled object of a class of its own: loading it would run code from the file."""


def test_member_that_needs_code_to_load_is_refused(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    torch.save({'model': model_dict['resnet8'](num_classes=100).state_dict(), 'extra': NotAWeight()}, buffer)
    mirror = tmp_path / 'mirror'
    write_archive(mirror, {'cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth': buffer.getvalue()})
    monkeypatch.setattr(fetch, 'CIFAR_TEACHERS', ('resnet8',))
    monkeypatch.setattr(fetch, 'CIFAR_MEMBER_SHA256', {})
    with pytest.raises(CheckpointError, match='cannot be read as a checkpoint without running code from it'):
        fetch.main(['cifar', '--mirror', str(mirror), '--save_root', str(tmp_path / 'save')])


@pytest.mark.slow
def test_member_of_another_architecture_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / 'mirror'
    blob = repdistiller_checkpoint(model_dict['resnet8'](num_classes=100))
    write_archive(mirror, {'cifar_teachers/resnet20_vanilla/ckpt_epoch_240.pth': blob})
    monkeypatch.setattr(fetch, 'CIFAR_TEACHERS', ('resnet20',))
    monkeypatch.setattr(fetch, 'CIFAR_MEMBER_SHA256', {})
    with pytest.raises(CheckpointError, match=r"does not fit resnet20 \(it looks like resnet8\)"):
        fetch.main(['cifar', '--mirror', str(mirror), '--save_root', str(tmp_path / 'save')])


@pytest.fixture
def imagenet_mirror(tmp_path, monkeypatch):
    """torchvision's format (a bare state dict) for a small ImageNet model standing in for ResNet-34/50."""
    torch.manual_seed(0)
    net = imagenet_model_dict['ResNet50_quarter'](num_classes=1000)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    blob = buffer.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    name = f'resnet50q-{digest[:8]}.pth'
    mirror = tmp_path / 'mirror'
    mirror.mkdir()
    (mirror / name).write_bytes(blob)
    monkeypatch.setattr(fetch, 'IMAGENET_WEIGHTS', (('ResNet50_quarter', f'https://example.invalid/{name}', digest),))
    return mirror, net


def test_imagenet_weights_install_in_the_imagenet_layout(tmp_path, imagenet_mirror):
    mirror, net = imagenet_mirror
    save = tmp_path / 'save'
    fetch.main(['imagenet', '--mirror', mirror.as_uri(), '--save_root', str(save), '--keep-downloads'])
    path = save / 'teachers' / 'models' / 'ResNet50_quarter_vanilla_imagenet_trial_0' / 'ResNet50_quarter_best.pth'
    loaded = imagenet_model_dict['ResNet50_quarter'](num_classes=1000)
    load_weights(loaded, str(path), 'ResNet50_quarter')
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded.eval()(x), net.eval()(x))
    assert 'epoch' not in torch.load(path, weights_only=True)  # torchvision's files record none
    assert len(list((save / 'teachers' / 'downloads').iterdir())) == 1  # --keep-downloads


def test_imagenet_file_with_the_wrong_hash_is_refused_and_removed(tmp_path, imagenet_mirror, monkeypatch):
    mirror, _ = imagenet_mirror
    (url_name,) = [p.name for p in mirror.iterdir()]
    monkeypatch.setattr(fetch, 'IMAGENET_WEIGHTS', (('ResNet50_quarter', f'https://example.invalid/{url_name}',
                                                     'f' * 64),))
    with pytest.raises(CheckpointError, match=r"has SHA-256 [0-9a-f]{64}, expected f{64}; it is not the published "
                                              r"file and was removed$"):
        fetch.main(['imagenet', '--mirror', mirror.as_uri(), '--save_root', str(tmp_path / 'save')])
    assert not any((tmp_path / 'save' / 'teachers' / 'downloads').iterdir())
    # a file of a --mirror folder is read in place: refused, but left where it is
    with pytest.raises(CheckpointError, match=r"expected f{64}; it is not the published file$"):
        fetch.main(['imagenet', '--mirror', str(mirror), '--save_root', str(tmp_path / 'save')])
    assert (mirror / url_name).is_file()


def test_torchvision_hashes_agree_with_their_file_names():
    # torch.hub's rule: the '-<hex>' part of the file name starts the file's SHA-256
    for model, url, digest in fetch.IMAGENET_WEIGHTS:
        assert url.startswith('https://download.pytorch.org/models/') and len(digest) == 64
        assert digest.startswith(url.rsplit('-', 1)[1].split('.')[0]), model
    assert [m for m, _, _ in fetch.IMAGENET_WEIGHTS] == ['ResNet34', 'ResNet50']


def test_unknown_set_is_one_line():
    with pytest.raises(KDZooError, match="unknown teacher set 'tiny'; choose cifar, imagenet"):
        fetch.main(['tiny'])


def run_fetch_sh(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop('KDZOO_TEACHERS_MIRROR', None)
    return subprocess.run(['bash', os.path.join(REPO, 'scripts', 'fetch_teachers.sh'), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_script_offline_is_one_clear_line(tmp_path):
    """The real table (published URLs and hashes) against a host that refuses connections."""
    result = run_fetch_sh('imagenet', '--mirror', 'http://127.0.0.1:9', '--save_root', tmp_path / 'save')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in result.stderr
    assert lines[0].startswith('error: cannot download http://127.0.0.1:9/resnet34-b627a593.pth (')
    assert 'check the network connection' in lines[0] and '--mirror' in lines[0]


def test_script_refuses_a_file_that_is_not_the_published_one(tmp_path):
    mirror = tmp_path / 'mirror'
    mirror.mkdir()
    (mirror / 'resnet34-b627a593.pth').write_bytes(b'not the weights')
    result = run_fetch_sh('imagenet', '--mirror', mirror, '--save_root', tmp_path / 'save')
    assert result.returncode == 2
    assert result.stderr.strip().endswith("expected b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f; "
                                          "it is not the published file")
    assert not (tmp_path / 'save' / 'teachers' / 'models').exists()
    assert (mirror / 'resnet34-b627a593.pth').read_bytes() == b'not the weights'  # the user's file is left alone
