"""A CIFAR-100 of any size with random pixels, written in torchvision's on-disk format, for the benchmarks that
time whole loaders and epochs (and for the tests, through tests/conftest.py)."""
import os
import pickle

import numpy as np


def write_fake_cifar100(root, n_train=300, n_test=100, seed=0):
    """CIFAR-100 in torchvision's on-disk format (python pickles) with random pixels; every class present."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    for name, n in (('train', n_train), ('test', n_test)):
        labels = (np.arange(n) % 100).tolist()
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        entry = {b'filenames': [f'img{i}.png'.encode() for i in range(n)], b'batch_label': name.encode(),
                 b'fine_labels': labels, b'coarse_labels': [label // 5 for label in labels], b'data': data}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(entry, f)
    with open(os.path.join(folder, 'meta'), 'wb') as f:
        pickle.dump({b'fine_label_names': [f'c{i}'.encode() for i in range(100)]}, f)
    return root
