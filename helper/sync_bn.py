"""--sync-bn: BatchNorm layers whose training statistics cover the global batch of a multi-process job."""
import contextlib
import threading

import torch

from .distributed import all_reduce_with_grad, current

_LOCAL_STATISTICS = threading.local()


@contextlib.contextmanager
def local_batch_statistics():
    """Inside, --sync-bn layers normalise with this rank's batch alone (L-MCL's meta step, which already
    sees the global batch on every rank)."""
    previous = getattr(_LOCAL_STATISTICS, 'on', False)
    _LOCAL_STATISTICS.on = True
    try:
        yield
    finally:
        _LOCAL_STATISTICS.on = previous


def _local_only():
    return getattr(_LOCAL_STATISTICS, 'on', False) or not current().enabled


class CrossRankBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the whole global batch, on any backend (gloo too).

    torch.nn.SyncBatchNorm needs a GPU; this one sums the per-rank moments with a differentiable
    all-reduce (so the backward pass is synchronised as well), which makes a W-process run compute
    what one process computes on the global batch. The moments are summed in float64, so the
    E[x^2] - E[x]^2 form loses nothing that matters at float32. ``--sync-bn`` uses it on the CPU.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f'expected at least 2-D input (got {input.dim()}-D)')

    def forward(self, x):
        if not self.training or _local_only():
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        channels = x.size(1)
        count = torch.full((1,), x.numel() / channels, dtype=torch.float64, device=x.device)
        wide = x.double()
        moments = all_reduce_with_grad(torch.cat([wide.sum(dims), (wide * wide).sum(dims), count]))
        total = moments[-1]
        mean = moments[:channels] / total
        var = moments[channels:2 * channels] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        inv_std = torch.rsqrt(var + self.eps)
        weight = self.weight.double() if self.affine else torch.ones_like(mean)
        bias = self.bias.double() if self.affine else torch.zeros_like(mean)
        shape = [1, channels] + [1] * (x.dim() - 2)
        scale = (weight * inv_std).to(x.dtype).view(shape)
        shift = (bias - mean * weight * inv_std).to(x.dtype).view(shape)
        return x * scale + shift


class SwitchableSyncBatchNorm(torch.nn.SyncBatchNorm):
    """torch's SyncBatchNorm over the training-step group, but with this rank's batch alone inside
    ``local_batch_statistics`` (SyncBatchNorm has no double backward, which L-MCL's meta step needs)."""

    def forward(self, x):
        if _local_only():
            return torch.nn.modules.batchnorm._BatchNorm.forward(self, x)
        return super().forward(x)


def convert_sync_batchnorm(module, device):
    """Every BatchNorm layer → SwitchableSyncBatchNorm on CUDA, CrossRankBatchNorm elsewhere (state kept).
    Returns the converted module (the same object unless ``module`` itself is a BatchNorm layer)."""
    kind = SwitchableSyncBatchNorm if device.type == 'cuda' else CrossRankBatchNorm
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, kind):
        converted = kind(module.num_features, module.eps, module.momentum, module.affine,
                         module.track_running_stats)
        if kind is SwitchableSyncBatchNorm:
            converted.process_group = current().step_group
        if module.affine:  # before loading, so the values keep their precision
            converted.to(device=module.weight.device, dtype=module.weight.dtype)
        else:
            converted.to(device)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
