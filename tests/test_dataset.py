"""Data sets: CIFAR-100 reading and download errors, batched augmentation, CRD sampling, digits, image folders."""
import hashlib
import os
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import chi2
from sklearn.datasets import load_digits

from dataset import ContrastSpec, build_data
from dataset import cifar100, contrast
from dataset.contrast import ContrastSampler
from dataset.digits import digits_split
from dataset.image_transforms import random_resized_crop_box, val_crop
from dataset.imagenet import scan_image_folder
from dataset.memory import InMemoryLoader, crop_flip
from helper.errors import DatasetError, KDZooError

NUM_TRAIN = 300  # 3 images of each of the 100 classes
NUM_TEST = 100


def coded_image():
    """A 32x32x3 uint8 image whose pixels tell where they came from: R = 1 + row, G = 101 + column, B = 200."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing='ij')
    return np.stack([1 + rows, 101 + cols, np.full((32, 32), 200)], axis=-1).astype(np.uint8)


def write_cifar_split(path, images, labels):
    """A pickle laid out as the CIFAR-100 archive's files are: channel-major rows of 3072 bytes."""
    entry = {b'batch_label': b'fake', b'filenames': [b'%d.png' % i for i in range(len(labels))],
             b'fine_labels': list(labels), b'coarse_labels': [label // 5 for label in labels],
             b'data': images.transpose(0, 3, 1, 2).reshape(len(images), -1)}
    with open(path, 'wb') as f:
        pickle.dump(entry, f)


@pytest.fixture
def cifar(tmp_path):
    """A small CIFAR-100 on disk: (data folder, train images NHWC, train labels, test images, test labels)."""
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (NUM_TRAIN, 32, 32, 3), dtype=np.uint8)
    train_images[7] = coded_image()
    train_labels = [int(label) for label in rng.permutation(np.arange(NUM_TRAIN) % 100)]
    test_images = rng.integers(0, 256, (NUM_TEST, 32, 32, 3), dtype=np.uint8)
    test_images[0, :, :, 0], test_images[0, :, :, 1], test_images[0, :, :, 2] = 128, 0, 255
    test_labels = list(range(NUM_TEST))
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    write_cifar_split(folder / 'train', train_images, train_labels)
    write_cifar_split(folder / 'test', test_images, test_labels)
    return tmp_path, train_images, np.array(train_labels), test_images, np.array(test_labels)


def undo_unit_normalise(images):
    """uint8 NHWC pixels back from loader output normalised with mean 0 and std 1."""
    return torch.round(images.permute(0, 2, 3, 1) * 255).to(torch.uint8)


# ---- CIFAR-100 files ----

def test_reader_returns_the_stored_pixels_and_labels(cifar):
    root, train_images, train_labels, _, _ = cifar
    images, labels = cifar100.read_split(os.path.join(root, 'cifar-100-python'), 'train')
    assert images.shape == (NUM_TRAIN, 32, 32, 3) and images.dtype == torch.uint8
    assert torch.equal(images, torch.from_numpy(train_images))
    assert torch.equal(labels, torch.from_numpy(train_labels))
    # Row 2, column 5 of the coded image: red = 1 + 2, green = 101 + 5.
    assert images[7, 2, 5].tolist() == [3, 106, 200]


def test_python3_pickles_with_str_keys_read_like_the_archive(cifar):
    """A CIFAR-100 re-pickled by Python 3 (str keys, as a converted copy has) reads as the original does."""
    root = cifar[0]
    folder = os.path.join(root, 'cifar-100-python')
    expected = cifar100.read_split(folder, 'train')
    with open(os.path.join(folder, 'train'), 'rb') as f:
        entry = pickle.load(f, encoding='bytes')
    with open(os.path.join(folder, 'train'), 'wb') as f:
        pickle.dump({key.decode(): value for key, value in entry.items()}, f)
    images, labels = cifar100.read_split(folder, 'train')
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])


def test_missing_folder_error_names_the_absolute_path(tmp_path):
    with pytest.raises(DatasetError) as err:
        build_data('cifar100', str(tmp_path / 'nowhere'), 8, 'cpu', download=False)
    assert str(tmp_path / 'nowhere' / 'cifar-100-python') in str(err.value)
    assert cifar100.URL in str(err.value)


def test_failed_download_is_a_dataset_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(cifar100.urllib.request, 'urlopen', offline)
    with pytest.raises(DatasetError, match='no network'):
        build_data('cifar100', str(tmp_path), 8, 'cpu')


def test_archive_with_wrong_checksum_is_refused_and_removed(tmp_path):
    archive = tmp_path / 'cifar-100-python.tar.gz'
    archive.write_bytes(b'not the archive')
    with pytest.raises(DatasetError, match='MD5'):
        build_data('cifar100', str(tmp_path), 8, 'cpu')
    assert not archive.exists()


def test_archive_in_data_folder_is_checked_and_unpacked(cifar, tmp_path_factory, monkeypatch):
    root, train_images, _, _, _ = cifar
    target = tmp_path_factory.mktemp('fresh')
    archive = target / 'cifar-100-python.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(os.path.join(root, 'cifar-100-python'), arcname='cifar-100-python')
    monkeypatch.setattr(cifar100, 'MD5', hashlib.md5(archive.read_bytes()).hexdigest())
    data = build_data('cifar100', str(target), 8, 'cpu')
    assert data.num_train == NUM_TRAIN
    assert torch.equal(data.train.images.cpu(), torch.from_numpy(train_images))


def test_truncated_pickle_is_a_dataset_error(cifar):
    root = cifar[0]
    path = os.path.join(root, 'cifar-100-python', 'train')
    with open(path, 'rb') as f:
        head = f.read(5000)
    with open(path, 'wb') as f:
        f.write(head)
    with pytest.raises(DatasetError, match='cannot read CIFAR-100 file'):
        build_data('cifar100', str(root), 8, 'cpu', download=False)


@pytest.mark.parametrize('entry', [
    {b'fine_labels': [0]},  # no images
    {b'data': np.zeros((2, 100), np.uint8), b'fine_labels': [0, 1]},  # rows of the wrong length
    {b'data': np.zeros((1, 3072), np.uint8), b'fine_labels': [100]},  # a label past the 100 classes
])
def test_pickle_without_cifar_content_is_a_dataset_error(cifar, entry):
    root = cifar[0]
    with open(os.path.join(root, 'cifar-100-python', 'test'), 'wb') as f:
        pickle.dump(entry, f)
    with pytest.raises(DatasetError, match='CIFAR-100 file'):
        build_data('cifar100', str(root), 8, 'cpu', download=False)


# ---- CIFAR-100 loaders ----

def test_loader_batches_have_the_contract_shapes(cifar):
    root, _, train_labels, _, _ = cifar
    data = build_data('cifar100', str(root), 32, 'cpu', download=False)
    assert (data.num_classes, data.num_train, len(data.train), len(data.val)) == (100, NUM_TRAIN, 10, 1)
    assert torch.equal(data.train_labels, torch.from_numpy(train_labels))
    batch = next(iter(data.train))
    assert batch.images.shape == (32, 3, 32, 32) and batch.images.dtype == torch.float32
    assert batch.images.is_contiguous()
    assert batch.targets.dtype == batch.indices.dtype == torch.int64
    assert batch.images.device.type == batch.targets.device.type == batch.indices.device.type == 'cpu'
    assert batch.contrast_idx is None
    val = next(iter(data.val))
    assert val.images.shape == (NUM_TEST, 3, 32, 32) and torch.equal(val.indices, torch.arange(NUM_TEST))

    nhwc = build_data('cifar100', str(root), 32, 'cpu', download=False, channels_last=True, val_batch_size=40)
    assert next(iter(nhwc.train)).images.is_contiguous(memory_format=torch.channels_last)
    assert len(nhwc.val) == 3


def test_test_images_are_only_normalised(cifar):
    root, _, _, test_images, _ = cifar
    data = build_data('cifar100', str(root), 8, 'cpu', download=False)
    images = next(iter(data.val)).images
    # Test image 0 is R=128, G=0, B=255 everywhere: (v / 255 - mean) / std, worked out by hand.
    assert torch.allclose(images[0, 0], torch.full((32, 32), -0.0192120), atol=1e-5)
    assert torch.allclose(images[0, 1], torch.full((32, 32), -1.8974659), atol=1e-5)
    assert torch.allclose(images[0, 2], torch.full((32, 32), 2.0253531), atol=1e-5)
    # Image 5 pixel by pixel, green channel.
    expected = (test_images[5, :, :, 1] / 255 - 0.4867) / 0.2565
    assert np.allclose(images[5, 1].numpy(), expected, atol=1e-5)


def coded_loader(count, batch_size, seed=0):
    """A training loader over ``count`` copies of the coded image, normalised with mean 0 and std 1."""
    images = torch.from_numpy(coded_image()).expand(count, 32, 32, 3).contiguous()
    return InMemoryLoader(images, torch.zeros(count, dtype=torch.int64), batch_size, (0, 0, 0), (1, 1, 1),
                          train=True, seed=seed)


def read_crop(pixels):
    """(dy, dx, flipped) of coded images cropped and flipped: read off output pixels (16, 16) and (16, 17)."""
    red, green = pixels[:, 16, 16, 0].long(), pixels[:, 16, 16, 1].long()
    flipped = pixels[:, 16, 17, 1].long() - green == -1
    dy = red - 1 - 12  # output row 16 shows source row dy + 12
    dx = torch.where(flipped, green - 101 - 11, green - 101 - 12)  # flipped: output column 16 is crop column 15
    return dy, dx, flipped


def test_crop_and_flip_are_uniform_and_independent():
    loader = coded_loader(1000, 250)
    draws = []
    for epoch in range(5):
        loader.set_epoch(epoch)
        draws += [read_crop(undo_unit_normalise(batch.images)) for batch in loader]
    dy, dx, flipped = (torch.cat(parts) for parts in zip(*draws))
    assert len(dy) == 5000
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    assert dy.min() == dx.min() == 0 and dy.max() == dx.max() == 8
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=9).double()
        assert ((counts - 5000 / 9) ** 2 / (5000 / 9)).sum() < chi2.ppf(0.999, 8)
    joint = torch.bincount(dy * 9 + dx, minlength=81).double()
    assert ((joint - 5000 / 81) ** 2 / (5000 / 81)).sum() < chi2.ppf(0.999, 80)


def test_each_output_is_the_padded_crop_at_its_offsets():
    loader = coded_loader(64, 64)
    pixels = undo_unit_normalise(next(iter(loader)).images)
    source = torch.from_numpy(coded_image()).permute(2, 0, 1)
    padded = F.pad(source, (4, 4, 4, 4))  # zeros, as RandomCrop(32, padding=4) pads
    for image, dy, dx, flipped in zip(pixels, *read_crop(pixels)):
        crop = padded[:, dy:dy + 32, dx:dx + 32]
        expected = crop.flip(-1) if flipped else crop
        assert torch.equal(image.permute(2, 0, 1), expected)


def test_crop_flip_by_hand():
    images = torch.from_numpy(coded_image())[None]
    plain, mirrored = crop_flip(images, torch.tensor([0, 0]), torch.tensor([0, 0]),
                                torch.tensor([8, 8]), torch.tensor([False, True]))
    # dy=0 shifts the image 4 rows down; dx=8 shows source columns 4..35, so 4 columns of padding on the right.
    assert plain[3].eq(0).all() and plain[:, 28:].eq(0).all()
    assert plain[4, 0].tolist() == [1, 105, 200]  # source row 0, column 4
    assert plain[4, 27].tolist() == [1, 132, 200]  # source row 0, column 31
    assert mirrored[4, 31].tolist() == [1, 105, 200] and mirrored[4, 4].tolist() == [1, 132, 200]
    assert mirrored[:, :4].eq(0).all()


def test_an_epoch_replays_exactly_and_epochs_differ(cifar):
    root = cifar[0]
    data = build_data('cifar100', str(root), 64, 'cpu', download=False, seed=3, train_sample=ContrastSpec(50))
    data.train.set_epoch(4)
    global_state = torch.get_rng_state()
    first, again = list(data.train), list(data.train)
    assert torch.equal(torch.get_rng_state(), global_state)  # all draws come from the epoch's own generators
    for a, b in zip(first, again):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.contrast_idx, b.contrast_idx)
    data.train.set_epoch(5)
    assert not torch.equal(first[0].indices, next(iter(data.train)).indices)
    # CRD sampling draws from its own stream: the same epoch without it shows the same images.
    plain = build_data('cifar100', str(root), 64, 'cpu', download=False, seed=3)
    plain.train.set_epoch(4)
    assert torch.equal(next(iter(plain.train)).images, first[0].images)


def test_an_epoch_visits_every_image_once(cifar):
    root, _, train_labels, _, _ = cifar
    data = build_data('cifar100', str(root), 64, 'cpu', download=False)
    batches = list(data.train)
    assert [len(b.indices) for b in batches] == [64, 64, 64, 64, 44]
    indices = torch.cat([b.indices for b in batches])
    assert torch.equal(indices.sort().values, torch.arange(NUM_TRAIN))
    assert torch.equal(torch.cat([b.targets for b in batches]), torch.from_numpy(train_labels)[indices])


def test_drop_last_drops_the_short_batch(cifar):
    data = build_data('cifar100', str(cifar[0]), 64, 'cpu', download=False, drop_last=True)
    batches = list(data.train)
    assert len(data.train) == len(batches) == 4 and all(len(b.indices) == 64 for b in batches)
    assert len(torch.cat([b.indices for b in batches]).unique()) == 256


# ---- CRD sampling ----

def test_exact_rows_are_self_then_distinct_negatives_of_other_classes(cifar):
    root, _, train_labels, _, _ = cifar
    labels = torch.from_numpy(train_labels)
    k = NUM_TRAIN - 3 - 1  # the largest allowed: all but one image outside the anchor's class
    data = build_data('cifar100', str(root), 64, 'cpu', download=False, train_sample=ContrastSpec(k, 'exact'))
    for batch in data.train:
        rows = batch.contrast_idx
        assert rows.shape == (len(batch.indices), k + 1) and rows.dtype == torch.int64
        assert torch.equal(rows[:, 0], batch.indices)
        assert (labels[rows[:, 1:]] != batch.targets[:, None]).all()
        assert all(len(row.unique()) == k for row in rows[:, 1:])


def test_relax_positive_is_a_random_image_of_the_same_class(cifar):
    root, _, train_labels, _, _ = cifar
    labels = torch.from_numpy(train_labels)
    data = build_data('cifar100', str(root), 100, 'cpu', download=False, train_sample=ContrastSpec(20, 'relax'))
    rows = torch.cat([b.contrast_idx for b in data.train])
    indices = torch.cat([b.indices for b in data.train])
    assert torch.equal(labels[rows[:, 0]], labels[indices])
    assert (rows[:, 0] != indices).sum() > 100  # 2 in 3 positives are another image of the class
    assert (labels[rows[:, 1:]] != labels[indices][:, None]).all()


def test_nce_k_too_large_is_refused(cifar):
    with pytest.raises(KDZooError, match=r'--nce_k 297 .* below 297'):
        build_data('cifar100', str(cifar[0]), 8, 'cpu', download=False, train_sample=ContrastSpec(297))


def test_negatives_and_relax_positives_are_uniform():
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1, 2, 0, 1])  # classes of 3, 4 and 3 images, interleaved
    sampler = ContrastSampler(labels, ContrastSpec(4, 'relax'), 'cpu')
    anchors = torch.full((6000,), 3)  # index 3 is of class 1, the largest: its pool is narrower than others'
    rows = sampler.sample(anchors, labels[anchors], torch.Generator().manual_seed(0))
    same_class, others = [1, 3, 6, 9], [0, 2, 4, 5, 7, 8]
    positives = torch.bincount(rows[:, 0], minlength=10).double()
    assert positives[others].sum() == 0
    assert ((positives[same_class] - 1500) ** 2 / 1500).sum() < chi2.ppf(0.999, 3)
    assert all(len(row.unique()) == 4 for row in rows[:100, 1:])
    # 4 picked out of 6 other-class images per row: each should appear in 4/6 of the rows.
    negatives = torch.bincount(rows[:, 1:].flatten(), minlength=10).double()
    assert negatives[same_class].sum() == 0
    assert ((negatives[others] - 4000) ** 2 / 4000).sum() < chi2.ppf(0.999, 5)


def test_large_batches_draw_their_keys_in_chunks(monkeypatch):
    monkeypatch.setattr(contrast, 'MAX_KEYS', 20)  # room for 2 rows of 7 keys at a time
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1, 2, 0, 1])
    sampler = ContrastSampler(labels, ContrastSpec(5), 'cpu')
    anchors = torch.arange(10).repeat(5)
    rows = sampler.sample(anchors, labels[anchors], torch.Generator().manual_seed(2))
    assert rows.shape == (50, 6) and torch.equal(rows[:, 0], anchors)
    assert (labels[rows[:, 1:]] != labels[anchors][:, None]).all()
    assert all(len(row.unique()) == 5 for row in rows[:, 1:])


def test_classes_with_a_small_pool_draw_with_replacement():
    labels = torch.tensor([0] * 10 + [1, 1, 2, 2])  # class 0 has 4 others, classes 1 and 2 have 12
    sampler = ContrastSampler(labels, ContrastSpec(6), 'cpu')
    rows = sampler.sample(torch.tensor([0, 10]), torch.tensor([0, 1]), torch.Generator().manual_seed(1))
    assert torch.isin(rows[0, 1:], torch.tensor([10, 11, 12, 13])).all()
    assert len(rows[1, 1:].unique()) == 6 and (labels[rows[1, 1:]] != 1).all()


# ---- digits ----

def test_digits_split_counts_and_pixels():
    train_images, train_labels, test_images, test_labels = digits_split()
    assert (len(train_labels), len(test_labels)) == (1437, 360)
    assert train_images.shape == (1437, 32, 32, 3) and train_images.dtype == torch.uint8
    assert torch.equal(torch.bincount(train_labels) + torch.bincount(test_labels),
                       torch.bincount(torch.from_numpy(load_digits().target)))
    assert (torch.bincount(test_labels) >= 35).all()  # every class keeps about 20% for testing
    assert train_images.min() == 0 and train_images.max() == 255
    # 4x4 blocks of one 8x8 pixel, the same in all channels; 16 maps to 255.
    assert torch.equal(train_images, train_images[:, ::4, ::4].repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert torch.equal(train_images[..., 0], train_images[..., 2])
    all_images = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    assert any(np.array_equal(image, train_images[0, ::4, ::4, 0].numpy()) for image in all_images)


def test_digits_loader_normalises_with_training_statistics():
    data = build_data('digits', None, 500, 'cpu')
    assert (data.num_classes, data.num_train, len(data.train), len(data.val)) == (10, 1437, 3, 1)
    assert torch.equal(data.train_labels.unique(), torch.arange(10))
    scaled = data.train.images.double() / 255
    assert torch.allclose(data.train.mean.double(), scaled.mean(dim=(0, 1, 2)), atol=1e-6)
    # The corner pixel of every digit is blank: 0 normalises to -mean / std.
    corner = next(iter(data.val)).images[:, :, 0, 0]
    assert torch.allclose(corner, (-data.train.mean / data.train.std).expand_as(corner))


# ---- image folders ----

SIZES = [(300, 200), (180, 260), (64, 48)]


def write_tree(root, classes, per_class, folder='train'):
    """JPEGs of varied sizes under root/folder/<class>/: red keyed by class, green and blue ramps across."""
    for label, name in enumerate(classes):
        os.makedirs(root / folder / name, exist_ok=True)
        for number in range(per_class):
            width, height = SIZES[number % 3]
            rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
            pixels = np.stack([np.full((height, width), 40 * label + 20), cols * 255 // width,
                               rows * 255 // height], axis=-1).astype(np.uint8)
            Image.fromarray(pixels).save(root / folder / name / f'{number}.JPEG', quality=95)


@pytest.fixture
def image_root(tmp_path):
    write_tree(tmp_path, ['emu', 'cat', 'dog'], 3)
    write_tree(tmp_path, ['emu', 'cat', 'dog'], 2, 'val')
    (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('not an image')
    return tmp_path


def test_scan_sorts_classes_and_files(image_root):
    classes, samples = scan_image_folder(str(image_root / 'train'))
    assert classes == ['cat', 'dog', 'emu']
    assert [(os.path.relpath(path, image_root), label) for path, label in samples[:4]] == [
        ('train/cat/0.JPEG', 0), ('train/cat/1.JPEG', 0), ('train/cat/2.JPEG', 0), ('train/dog/0.JPEG', 1)]
    assert len(samples) == 9


def test_image_folder_batches(image_root):
    data = build_data('imagenet', str(image_root), 4, 'cpu', num_workers=0)
    assert (data.num_classes, data.num_train, len(data.train), len(data.val)) == (3, 9, 3, 1)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    batch = next(iter(data.train))
    assert batch.images.shape == (4, 3, 224, 224) and batch.images.dtype == torch.float32
    assert torch.equal(batch.targets, data.train_labels[batch.indices])
    val = next(iter(data.val))
    assert val.images.shape == (6, 3, 224, 224) and val.targets.tolist() == [0, 0, 1, 1, 2, 2]
    # Red is 60 all over val/cat/0.JPEG: (60 / 255 - 0.485) / 0.229, give or take JPEG's few levels.
    assert abs(val.images[0, 0].mean().item() - -1.0906) < 0.05


def test_image_folder_crops_replay_per_epoch_and_across_workers(image_root):
    data = build_data('imagenet', str(image_root), 9, 'cpu', num_workers=0, seed=1)
    data.train.set_epoch(2)
    global_state = torch.get_rng_state()
    first, again = next(iter(data.train)), next(iter(data.train))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(first.images, again.images) and torch.equal(first.indices, again.indices)
    data.train.set_epoch(3)
    later = next(iter(data.train))
    assert not torch.equal(first.indices, later.indices)
    order = later.indices.argsort()
    assert not torch.equal(first.images[first.indices.argsort()], later.images[order])
    # Worker processes give the same crops; the persistent workers also follow set_epoch.
    workers = build_data('imagenet', str(image_root), 9, 'cpu', num_workers=2, seed=1)
    workers.train.set_epoch(2)
    assert torch.equal(next(iter(workers.train)).images, first.images)
    workers.train.set_epoch(3)
    assert torch.equal(next(iter(workers.train)).images, later.images)


def test_image_folder_contrast_rows(image_root):
    data = build_data('imagenet', str(image_root), 9, 'cpu', num_workers=0, train_sample=ContrastSpec(5))
    batch = next(iter(data.train))
    assert torch.equal(batch.contrast_idx[:, 0], batch.indices)
    assert (data.train_labels[batch.contrast_idx[:, 1:]] != batch.targets[:, None]).all()


def test_empty_class_folder_is_an_error(image_root):
    os.makedirs(image_root / 'train' / 'fox')
    with pytest.raises(DatasetError, match='train/fox has no'):
        build_data('imagenet', str(image_root), 4, 'cpu', num_workers=0)


def test_train_and_val_classes_must_match(image_root):
    write_tree(image_root, ['zebra'], 1, 'val')
    with pytest.raises(DatasetError, match=r"only in train: \[\], only in val: \['zebra'\]"):
        build_data('imagenet', str(image_root), 4, 'cpu', num_workers=0)


def test_missing_val_folder_is_an_error(tmp_path):
    write_tree(tmp_path, ['cat'], 1)
    with pytest.raises(DatasetError, match=f"{tmp_path / 'val'} does not exist"):
        build_data('imagenet', str(tmp_path), 4, 'cpu', num_workers=0)


def test_random_resized_crop_box():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, height, width = random_resized_crop_box(300, 200, rng)
        assert 0 <= top and top + height <= 200 and 0 <= left and left + width <= 300
        assert 0.08 * 60000 * 0.95 <= height * width <= 60000
        assert 3 / 4 * 0.9 <= width / height <= 4 / 3 * 1.1
    # No 8%-area crop of a 1000x10 strip has an aspect ratio under 4/3: the centred fallback is 13 wide.
    assert random_resized_crop_box(1000, 10, rng) == (0, 493, 10, 13)
    assert random_resized_crop_box(10, 1000, rng) == (493, 0, 13, 10)


def test_val_crop_resizes_the_shorter_side_then_centres():
    image = Image.new('RGB', (300, 200), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 110, 200))  # a white stripe over columns 100..109
    out = np.asarray(val_crop(image))
    # 300x200 becomes 384x256, moving the stripe to columns 128..140; the crop starts at column 80.
    assert out.shape == (224, 224, 3)
    assert out[:, 50:58].min() == 255 and out[:, :46].max() == 0 and out[:, 62:].max() == 0
    assert np.asarray(val_crop(image.transpose(Image.Transpose.ROTATE_90))).shape == (224, 224, 3)


def test_unknown_dataset_name():
    with pytest.raises(KDZooError, match='unknown data set'):
        build_data('mnist', None, 8, 'cpu')
