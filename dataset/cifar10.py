"""CIFAR-10 from its python-pickle archive (``cifar-10-batches-py``: data_batch_1..5 and test_batch, the
same row layout as CIFAR-100's files, labels under ``labels``), downloaded on first use, kept in memory."""
import os

from .cifar100 import find_archive_folder, read_batches
from .memory import in_memory_bundle

URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
MD5 = 'c58f30108f718f92721af3b95e74349a'
FOLDER = 'cifar-10-batches-py'
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILES = ('test_batch',)
NUM_CLASSES = 10
# Per-channel mean and standard deviation of the 50000 training images (as the CIFAR-100 values are of its own).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def build_cifar10(data_folder, *, download, **loader_options):
    """DataBundle of CIFAR-10; ``loader_options`` go to ``in_memory_bundle``."""
    folder = find_archive_folder(data_folder, download, FOLDER, TRAIN_FILES + TEST_FILES, URL, lambda: MD5,
                                 'CIFAR-10')

    def read(files):
        return read_batches([os.path.join(folder, name) for name in files], b'labels', NUM_CLASSES, 'CIFAR-10',
                            FOLDER)

    train_images, train_labels = read(TRAIN_FILES)
    val_images, val_labels = read(TEST_FILES)
    return in_memory_bundle(train_images, train_labels, val_images, val_labels, NUM_CLASSES, MEAN, STD,
                            **loader_options)
