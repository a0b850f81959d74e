"""DALI CPU pipelines over a tiny ImageFolder of JPEGs (skipped where nvidia-dali is not installed)."""
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.imagenet import scan_image_folder
from dataset.imagenet_dali import build_dali_imagenet, import_dali
from helper.errors import KDZooError

needs_dali = pytest.mark.skipif(importlib.util.find_spec('nvidia') is None
                                or importlib.util.find_spec('nvidia.dali') is None,
                                reason='nvidia-dali is not installed')


def test_missing_dali_names_the_wheel(monkeypatch):
    monkeypatch.setitem(sys.modules, 'nvidia.dali', None)  # makes `from nvidia import dali` fail
    with pytest.raises(KDZooError, match=r'pip install nvidia-dali-cuda\d+0'):
        import_dali()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """3 classes x 6 training and 2 validation JPEGs of different sizes, each class a different colour."""
    root = tmp_path_factory.mktemp('imagenet')
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]
    for split, count in (('train', 6), ('val', 2)):
        for c, colour in enumerate(colours):
            os.makedirs(root / split / f'n0{c}', exist_ok=True)
            for i in range(count):
                size = (300 + 17 * i, 260 + 11 * c)
                Image.new('RGB', size, colour).save(root / split / f'n0{c}' / f'{i}.JPEG', quality=95)
    return root


def bundle(folder, **kw):
    _, train = scan_image_folder(str(folder / 'train'))
    _, val = scan_image_folder(str(folder / 'val'))
    options = dict(mode='cpu', batch_size=4, val_batch_size=4, device=torch.device('cpu'), seed=3,
                   train_sample=None, num_threads=1)
    options.update(kw)
    return build_dali_imagenet(train, val, 3, **options)


@needs_dali
def test_cpu_pipeline_batches(folder):
    data = bundle(folder)
    data.train.set_epoch(1)
    batches = list(data.train)
    assert len(batches) == len(data.train) == 18 // 4
    seen = torch.cat([b.indices for b in batches])
    assert len(set(seen.tolist())) == len(seen)  # no image twice in an epoch
    for batch in batches:
        assert batch.images.shape == (4, 3, 224, 224) and batch.images.dtype == torch.float32
        assert torch.equal(batch.targets, batch.indices // 6)  # files sorted by class: 6 per class
        # solid-colour images: the dominant channel normalises high, the others low
        means = batch.images.mean(dim=(2, 3))
        assert torch.equal(means.argmax(dim=1), batch.targets)
    val = list(data.val)
    assert sum(len(b.targets) for b in val) == 6
    expected = (np.array([220, 30, 30]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert np.allclose(val[0].images[0].mean(dim=(1, 2)).numpy(), expected, atol=0.05)


@needs_dali
def test_epochs_are_reproducible_and_differ(folder):
    a, b = bundle(folder), bundle(folder)
    a.train.set_epoch(2)
    b.train.set_epoch(2)
    first, second = list(a.train), list(b.train)
    assert all(torch.equal(x.indices, y.indices) and torch.equal(x.images, y.images) for x, y in zip(first, second))
    a.train.set_epoch(3)
    third = list(a.train)
    assert not all(torch.equal(x.indices, y.indices) for x, y in zip(first, third))


@needs_dali
def test_two_ranks_split_the_epoch(folder):
    shards = []
    for rank in range(2):
        data = bundle(folder, rank=rank, world_size=2, batch_size=3)
        data.train.set_epoch(1)
        shards.append(torch.cat([b.indices for b in data.train]))
    assert len(shards[0]) == len(shards[1]) == 9
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


@needs_dali
def test_gpu_mode_without_gpu_is_one_clear_error(folder):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(KDZooError, match='--dali gpu decodes on a GPU'):
        bundle(folder, mode='gpu')


@pytest.mark.slow
@needs_dali
def test_train_teacher_reads_imagenet_folders_with_dali_cpu_in_two_processes(folder, tmp_path):
    """The SimKD repo's ImageNet command shape on the tiny folder: --dali cpu, two gloo processes."""
    import subprocess
    import socket
    from conftest import REPO
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, 'train_teacher.py'), '--model', 'MobileNetV1', '--dataset', 'imagenet',
         '--data_folder', str(folder), '--batch_size', '6', '--epochs', '1', '--num_workers', '2', '--precision',
         'fp32', '--dali', 'cpu', '--gpu_id', '0,1', '--multiprocessing-distributed', '--dist-url',
         f'tcp://127.0.0.1:{port}', '--save_root', str(tmp_path / 'save')],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count('epoch 1/1') == 1
    metrics = tmp_path / 'save' / 'teachers' / 'models' / 'MobileNetV1_vanilla_imagenet_trial_0' / 'metrics.json'
    assert metrics.exists()


@needs_dali
def test_strong_view_is_a_second_uint8_crop_through_the_operations(folder, monkeypatch):
    import dataset.imagenet_dali as dali_module
    from dataset.strong_augment import strong_augment
    calls = []

    def recorded(pixels, generator):
        out = strong_augment(pixels, generator)
        calls.append((pixels, out))
        return out
    monkeypatch.setattr(dali_module, 'strong_augment', recorded)
    data = bundle(folder)
    data.train.strong_view = True  # switched on after construction, as NTCE does
    data.train.set_epoch(1)
    batches = list(data.train)
    assert len(calls) == len(batches) == 4
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for batch, (crops, out) in zip(batches, calls):
        assert crops.dtype == torch.uint8 and crops.shape == (4, 224, 224, 3)  # NHWC uint8, as strong_augment takes
        # solid-colour images: the second crop is the class's colour, as the weak view
        assert torch.equal(crops.float().mean(dim=(1, 2)).argmax(dim=1), batch.targets)
        expected = (out.float() / 255 - torch.tensor(mean).float()) / torch.tensor(std).float()
        torch.testing.assert_close(batch.images_strong, expected.permute(0, 3, 1, 2))
        assert batch.images_strong.shape == batch.images.shape
    # the same seed and epoch give the same strong views
    again = bundle(folder, strong_view=True)
    again.train.set_epoch(1)
    for a, b in zip(batches, list(again.train)):
        assert torch.equal(a.images_strong, b.images_strong)
    assert all(b.images_strong is None for b in data.val)
