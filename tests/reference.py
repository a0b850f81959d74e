"""What the float64 reference tests of the method files share: NumPy softmaxes for transcriptions of official
losses, and a method's settled arguments on a CIFAR pair (numeric gradients are conftest.numeric_grad)."""
import numpy as np

import train_student


def parse(name, *flags, model_t='resnet32x4', model_s='resnet8x4', dataset='cifar100'):
    """train_student's parsed and settled arguments for ``--distill name`` on a pair, without a teacher file."""
    return train_student.parse_args(['--path_t', 'teacher.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--dataset', dataset, '--distill', name, *flags])


def log_softmax(z):
    """Row-wise log-softmax, shifted by the row maximum."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))
