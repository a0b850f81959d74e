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
    path = os.path.join(folder, split)
    try:
        with open(path, 'rb') as f:
            entry = pickle.load(f, encoding='bytes')
        # The archive was pickled by Python 2 (byte-string keys); a copy re-pickled by Python 3 has str keys.
        entry = {key.decode('latin1') if isinstance(key, bytes) else key: value for key, value in entry.items()}
        data = np.asarray(entry['data'], dtype=np.uint8)
        labels = np.asarray(entry['fine_labels'], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError,
            IndexError) as err:
        raise DatasetError(f"cannot read CIFAR-100 file {path} ({type(err).__name__}: {err}); delete the "
                           f"'{FOLDER}' folder and download it again") from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),) \
            or labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise DatasetError(f"CIFAR-100 file {path} does not hold N x 3072 images with labels 0..99; delete the "
                           f"'{FOLDER}' folder and download it again")
    # Rows are channel-major (R plane, G plane, B plane); keep images as NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def find_cifar100(data_folder, download):
    """The ``cifar-100-python`` folder under ``data_folder``, downloading and unpacking it if allowed."""
    folder = os.path.join(os.path.abspath(data_folder), FOLDER)
    if all(os.path.isfile(os.path.join(folder, split)) for split in ('train', 'test')):
        return folder
    by_hand = (f"download {URL} and unpack it so that {folder}/train and {folder}/test exist "
               f"(or pass --data_folder where '{FOLDER}/' already is)")
    if not download:
        raise DatasetError(f"CIFAR-100 is not in {folder}; {by_hand}")
    try:
        fetch_archive(os.path.dirname(folder))
    except (OSError, tarfile.TarError) as err:
        raise DatasetError(f"CIFAR-100 is not in {folder} and fetching it failed ({err}); {by_hand}") from err
    if not all(os.path.isfile(os.path.join(folder, split)) for split in ('train', 'test')):
        raise DatasetError(f"the downloaded archive did not unpack to {folder}/train and test; {by_hand}")
    return folder


def fetch_archive(data_folder):
    """Download the archive into ``data_folder`` (unless already there), check its MD5, unpack it."""
    os.makedirs(data_folder, exist_ok=True)
    archive = os.path.join(data_folder, os.path.basename(URL))
    if not os.path.isfile(archive):
        partial = archive + '.part'  # renamed only once complete, so a cut-off download is never used
        with urllib.request.urlopen(URL, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, 'wb') as out:
            for chunk in iter(lambda: response.read(1 << 20), b''):
                out.write(chunk)
        os.replace(partial, archive)
    digest = hashlib.md5()
    with open(archive, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    if digest.hexdigest() != MD5:
        os.remove(archive)  # a bad file would otherwise be reused on every later run
        raise OSError(f"{archive} has MD5 {digest.hexdigest()}, expected {MD5}; it was removed")
    with tarfile.open(archive, 'r:gz') as tar:
        tar.extractall(data_folder, filter='data')  # refuses absolute paths, '..' and links leaving the folder


def build_cifar100(data_folder, *, download, **loader_options):
    """DataBundle of CIFAR-100; ``loader_options`` go to ``in_memory_bundle``."""
    folder = find_cifar100(data_folder, download)
    train_images, train_labels = read_split(folder, 'train')
    val_images, val_labels = read_split(folder, 'test')
    return in_memory_bundle(train_images, train_labels, val_images, val_labels, NUM_CLASSES, MEAN, STD,
                            **loader_options)
