"""Losses in full precision under mixed-precision training.

Sums and means over whole maps, Gram matrices and softmaxes lose too much in bf16/fp16, so the losses
compute in fp32 at least: half inputs are widened to fp32, fp32 and fp64 inputs (the tests' references)
are kept as they are, and autocast is switched off so that it does not narrow them again inside.
"""
import functools

import torch


def wide_dtype(dtype):
    """fp32 for a half type, the type itself for fp32 and fp64."""
    return torch.promote_types(dtype, torch.float32)


def at_least_fp32(x):
    """``x`` in fp32 when it is a half type, unchanged when it is fp32 or fp64."""
    return x.to(wide_dtype(x.dtype))


def full_precision(loss):
    """Decorator for a loss function or method: run it with autocast off and every tensor argument
    passed through ``at_least_fp32`` (other arguments, ``self`` and lists included, as they are)."""
    @functools.wraps(loss)
    def run(*args, **kwargs):
        device = next((a.device.type for a in args if torch.is_tensor(a)), 'cpu')
        args = [at_least_fp32(a) if torch.is_tensor(a) else a for a in args]
        with torch.autocast(device, enabled=False):
            return loss(*args, **kwargs)
    return run
