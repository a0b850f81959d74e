"""CIFAR-100 from the python-pickle archive, downloaded on first use and kept whole in memory."""
import hashlib
import os
import pickle
import tarfile
import urllib.request

import numpy as np
import torch

from helper.errors import DatasetError
from .memory import in_memory_bundle

URL = 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'
MD5 = 'eb9058c3a382ffc7106e4002c42a8d85'
FOLDER = 'cifar-100-python'
NUM_CLASSES = 100
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
DOWNLOAD_TIMEOUT_S = 30


def read_split(folder, split):
    """Images (N, 32, 32, 3) uint8 and fine labels (N,) int64 of ``split`` ('train' or 'test') in ``folder``."""
    return read_batches([os.path.join(folder, split)], b'fine_labels', NUM_CLASSES, 'CIFAR-100', FOLDER)


def read_batches(paths, label_key, num_classes, name, folder_name):
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of the python-pickle batch files ``paths`` of a
    CIFAR archive (CIFAR-100 keeps a split in one file, CIFAR-10 in up to five), concatenated in order."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, 'rb') as f:
                entry = pickle.load(f, encoding='bytes')
            # The archives were pickled by Python 2 (byte-string keys); a copy re-pickled by Python 3 has str keys.
            entry = {key.decode('latin1') if isinstance(key, bytes) else key: value for key, value in entry.items()}
            data = np.asarray(entry['data'], dtype=np.uint8)
            batch_labels = np.asarray(entry[label_key.decode('latin1')], dtype=np.int64)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError,
                IndexError) as err:
            raise DatasetError(f"cannot read {name} file {path} ({type(err).__name__}: {err}); delete the "
                               f"'{folder_name}' folder and download it again") from err
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or batch_labels.shape != (len(data),) \
                or batch_labels.min(initial=0) < 0 or batch_labels.max(initial=0) >= num_classes:
            raise DatasetError(f"{name} file {path} does not hold N x 3072 images with labels 0..{num_classes - 1}; "
                               f"delete the '{folder_name}' folder and download it again")
        images.append(data)
        labels.append(batch_labels)
    data, labels = np.concatenate(images), np.concatenate(labels)
    # Rows are channel-major (R plane, G plane, B plane); keep images as NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def find_cifar100(data_folder, download):
    """The ``cifar-100-python`` folder under ``data_folder``, downloading and unpacking it if allowed."""
    return find_archive_folder(data_folder, download, FOLDER, ('train', 'test'), URL, lambda: MD5, 'CIFAR-100')


def find_archive_folder(data_folder, download, folder_name, files, url, md5, name):
    """``data_folder``/``folder_name`` holding ``files``, downloading ``url`` (its MD5 given by the callable
    ``md5``, read when checked) and unpacking it there first if allowed."""
    folder = os.path.join(os.path.abspath(data_folder), folder_name)
    if all(os.path.isfile(os.path.join(folder, split)) for split in files):
        return folder
    listed = f"{folder}/{files[0]}" + (f" .. {files[-1]}" if len(files) > 2 else f" and {folder}/{files[-1]}")
    by_hand = (f"download {url} and unpack it so that {listed} exist "
               f"(or pass --data_folder where '{folder_name}/' already is)")
    if not download:
        raise DatasetError(f"{name} is not in {folder}; {by_hand}")
    try:
        fetch_archive(os.path.dirname(folder), url, md5())
    except (OSError, tarfile.TarError) as err:
        raise DatasetError(f"{name} is not in {folder} and fetching it failed ({err}); {by_hand}") from err
    if not all(os.path.isfile(os.path.join(folder, split)) for split in files):
        raise DatasetError(f"the downloaded archive did not unpack to {listed}; {by_hand}")
    return folder


def fetch_archive(data_folder, url=None, md5=None):
    """Download the archive into ``data_folder`` (unless already there), check its MD5, unpack it."""
    url, md5 = url or URL, md5 or MD5
    os.makedirs(data_folder, exist_ok=True)
    archive = os.path.join(data_folder, os.path.basename(url))
    if not os.path.isfile(archive):
        partial = archive + '.part'  # renamed only once complete, so a cut-off download is never used
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, 'wb') as out:
            for chunk in iter(lambda: response.read(1 << 20), b''):
                out.write(chunk)
        os.replace(partial, archive)
    digest = hashlib.md5()
    with open(archive, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    if digest.hexdigest() != md5:
        os.remove(archive)  # a bad file would otherwise be reused on every later run
        raise OSError(f"{archive} has MD5 {digest.hexdigest()}, expected {md5}; it was removed")
    with tarfile.open(archive, 'r:gz') as tar:
        tar.extractall(data_folder, filter='data')  # refuses absolute paths, '..' and links leaving the folder


def build_cifar100(data_folder, *, download, **loader_options):
    """DataBundle of CIFAR-100; ``loader_options`` go to ``in_memory_bundle``."""
    folder = find_cifar100(data_folder, download)
    train_images, train_labels = read_split(folder, 'train')
    val_images, val_labels = read_split(folder, 'test')
    return in_memory_bundle(train_images, train_labels, val_images, val_labels, NUM_CLASSES, MEAN, STD,
                            **loader_options)
