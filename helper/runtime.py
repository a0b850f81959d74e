"""Device, precision and seeding: where and how a run computes."""
import contextlib
import os
import random

import numpy as np
import torch

from .errors import KDZooError


def select_device(gpu_id):
    """The first device of --gpu_id when CUDA is there, else the CPU (said once, not an error)."""
    if not torch.cuda.is_available():
        print("note: no CUDA device found; running on the CPU")
        return torch.device('cpu')
    first = str(gpu_id).split(',')[0].strip() or '0'
    if not first.isdigit() or int(first) >= torch.cuda.device_count():
        raise KDZooError(f"--gpu_id {gpu_id} names a GPU that is not there ({torch.cuda.device_count()} "
                         f"visible); pass ids from 0 to {torch.cuda.device_count() - 1}")
    torch.cuda.set_device(int(first))
    return torch.device('cuda', int(first))


def resolve_precision(precision, device):
    """'auto' becomes bf16 where the device computes it natively (it roughly doubles CPU throughput
    on AVX512-BF16/AMX and is the fast path on Ampere and newer GPUs), else fp32."""
    if precision != 'auto':
        if precision == 'fp16' and device.type != 'cuda':
            raise KDZooError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return precision
    if device.type == 'cuda':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp32'
    return 'bf16' if torch.backends.mkldnn.is_available() and _cpu_has_native_bf16() else 'fp32'


def _cpu_has_native_bf16():
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device, precision):
    """The autocast context for a precision; fp32 runs without one."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(precision):
    """channels_last pays with reduced-precision convolutions (tensor cores, oneDNN); fp32 stays NCHW."""
    return torch.contiguous_format if precision == 'fp32' else torch.channels_last


def seed_everything(seed, deterministic):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def draw_seed():
    """A fresh seed for runs without --seed; recorded in the checkpoint so resume replays the same data."""
    return int.from_bytes(os.urandom(4), 'little') % (2**31)
