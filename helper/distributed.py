"""Collectives of a multi-process job, and this process's place in it (rank 0 of 1 outside a job).

``--batch_size`` is the global batch; each process trains on its own share of every global batch
(dataset/memory.py, dataset/imagenet.py). Gradients are averaged with bucketed all-reduces after
``backward`` over every parameter the optimiser holds, so any objective (a distillation method's own
modules, online peers) is data-parallel without wrapping each module in DistributedDataParallel. Only
rank 0 writes checkpoints and logs. How processes are started and watched is engine/launch.py's job.

Every worker keeps a heartbeat in shared memory: a thread beats every second (a frozen process stops
beating), and the collectives of a training step record when they began waiting, which the spawning
process watches. The training-step collectives run in a process group with a short timeout, and a worker
that waits in one for more than ``WAIT_TIMEOUT_S`` gives up by itself, so under torchrun (which ends the
job when one worker fails) a hang ends the job too. Both times can be set from the environment
(``timeouts``).
"""
import contextlib
import datetime
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .exceptions import KDZooError

HANG_TIMEOUT_S = 40      # the spawning process ends the job when a worker's heartbeat is this old
WAIT_TIMEOUT_S = 50      # a worker waiting this long in a training-step collective gives up itself
# The step group's own timeout is the wait timeout plus this: a backstop for waits the heartbeat does not
# see (NCCL's asynchronous ops).
STEP_TIMEOUT_MARGIN_S = 5
# Joining (nodes may be started minutes apart) and waiting for rank 0's checkpoints may legitimately take long.
PATIENT_TIMEOUT = datetime.timedelta(minutes=30)
EXIT_GAVE_UP = 3         # exit status of a worker that gave up waiting for the others




def _env_seconds(name, default):
    text = os.environ.get(name, '').strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # also refuses nan
        raise KDZooError(f"{name}={text} must be a positive number of seconds (default {default})")
    return value


def timeouts():
    """(hang, wait) in seconds: HANG_TIMEOUT_S and WAIT_TIMEOUT_S unless KDZOO_HANG_TIMEOUT or
    KDZOO_WAIT_TIMEOUT say otherwise. The tests set them small, so that a hung rank is seen in seconds; a
    machine whose ranks legitimately fall that far out of step can set them longer. Read where they are
    used, so that spawned workers and torchrun's processes see the launching environment's values."""
    return _env_seconds('KDZOO_HANG_TIMEOUT', HANG_TIMEOUT_S), _env_seconds('KDZOO_WAIT_TIMEOUT', WAIT_TIMEOUT_S)


# ---- the process's place in the job -------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_size: int = 1         # processes of the job on this node
    backend: str = ''
    device: str = ''            # this process's device, e.g. 'cuda:2' or 'cpu' ('' outside a job)
    step_group: object = None   # short timeout: the collectives of a training step

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


_CURRENT = Dist()


def current():
    """This process's Dist (rank 0 of 1 outside a distributed job)."""
    return _CURRENT


# ---- heartbeat ----------------------------------------------------------------------------------

class Heartbeat:
    """Two doubles, shared with the spawning process when there is one: the last beat of a ticker thread
    (every second while the process runs at all; a frozen process stops it) and the time a training-step
    collective began waiting for the other ranks (0 when not waiting). A rank that waits longer than the
    wait timeout gives up by itself; the spawning process acts earlier (engine/launch.py's ``_watch``)."""
    LAST, WAITING = 0, 1

    def __init__(self, slot, rank):
        self.slot = slot
        self.rank = rank
        self.wait_timeout = timeouts()[1]
        self.slot[self.LAST] = time.time()
        self.slot[self.WAITING] = 0.0
        threading.Thread(target=self._tick, name='kdzoo-heartbeat', daemon=True).start()

    def _tick(self):
        while True:
            now = time.time()
            self.slot[self.LAST] = now
            waiting = self.slot[self.WAITING]
            if waiting and now - waiting > self.wait_timeout:
                print(f"error: rank {self.rank} waited {self.wait_timeout:g} s for the other ranks in a collective: "
                      f"another rank died or hung; stopping", file=sys.stderr, flush=True)
                os._exit(EXIT_GAVE_UP)
            time.sleep(1.0)

    @contextlib.contextmanager
    def waiting(self):
        self.slot[self.WAITING] = time.time()
        try:
            yield
        finally:
            self.slot[self.WAITING] = 0.0


_HEARTBEAT = None


def _waiting():
    return _HEARTBEAT.waiting() if _HEARTBEAT is not None else contextlib.nullcontext()


# ---- collectives --------------------------------------------------------------------------------

def _sync(tensor):
    # NCCL returns before the data has arrived; wait here, where the heartbeat knows we are waiting.
    if tensor.is_cuda:
        torch.cuda.current_stream(tensor.device).synchronize()


def all_reduce_step(tensor, op=None):
    """Sum (or ``op``) over the ranks, in place, inside a training step (short timeout)."""
    with _waiting():
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM, group=_CURRENT.step_group)
        _sync(tensor)
    return tensor


def all_reduce_patient(tensor):
    """Sum over the ranks, in place, where ranks may arrive far apart (end of evaluation)."""
    dist.all_reduce(tensor)
    _sync(tensor)
    return tensor


def barrier_patient():
    """Wait for every rank, e.g. until rank 0 has written the epoch's checkpoints."""
    dist.barrier()
    if torch.cuda.is_available() and _CURRENT.backend == 'nccl':
        torch.cuda.synchronize()


def all_gather_step(tensor):
    """Concatenation along dim 0 of every rank's ``tensor`` (sizes along dim 0 may differ), rank order."""
    world = _CURRENT.world_size
    size = torch.tensor([tensor.size(0)], device=tensor.device, dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(world)]
    with _waiting():
        dist.all_gather(sizes, size, group=_CURRENT.step_group)
        sizes = [int(s) for s in sizes]
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[:tensor.size(0)] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous(), group=_CURRENT.step_group)
        _sync(padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' equal-shaped tensors concatenated; the backward sums every rank's gradient of its copy
    of the result and hands each rank its own slice. A loss computed identically on every rank from the
    gathered tensor then contributes world_size times its gradient, which the gradient average divides."""

    @staticmethod
    def forward(ctx, tensor):
        ctx.rank, ctx.rows = _CURRENT.rank, tensor.size(0)
        parts = [torch.empty_like(tensor) for _ in range(_CURRENT.world_size)]
        with _waiting():
            dist.all_gather(parts, tensor.contiguous(), group=_CURRENT.step_group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = all_reduce_step(grad.contiguous().clone())  # never the incoming buffer, which autograd owns
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor):
    return _GatherWithGrad.apply(tensor)


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        return all_reduce_step(tensor.clone())

    @staticmethod
    def backward(ctx, grad):
        return all_reduce_step(grad.clone())


def all_reduce_with_grad(tensor):
    """Differentiable sum over the ranks (the backward sums the ranks' gradients)."""
    return _AllReduceWithGrad.apply(tensor)


def all_reduce_gradients(parameters, weight, bucket_bytes=25 * 2**20):
    """Replace each gradient by the ``weight``-weighted mean over the ranks (``weight``: this rank's
    number of samples, so that a short last batch split unevenly still gives the global batch's mean),
    a flat bucket of one dtype per all-reduce; the weights travel in the buckets."""
    grads = [p.grad for p in parameters if p.grad is not None]
    by_dtype = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    for dtype in sorted(by_dtype, key=str):
        bucket, size = [], 0
        group = by_dtype[dtype]
        for i, grad in enumerate(group):
            bucket.append(grad)
            size += grad.numel() * grad.element_size()
            if size >= bucket_bytes or i == len(group) - 1:
                flat = torch.cat([g.reshape(-1) for g in bucket] + [torch.ones(1, dtype=dtype, device=grad.device)])
                flat.mul_(weight)
                all_reduce_step(flat)
                flat = flat[:-1] / flat[-1]
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset:offset + g.numel()].view_as(g))
                    offset += g.numel()
                bucket, size = [], 0


def broadcast_state(module, skip_prefixes=()):
    """Make every rank start from rank 0's parameters and buffers (those not under ``skip_prefixes``)."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if not name.startswith(tuple(skip_prefixes)):
            dist.broadcast(tensor.data, src=0)


def broadcast_batchnorm_buffers(module, skip_prefixes=()):
    """Rank 0's running statistics of every BatchNorm layer (not under ``skip_prefixes``) on every rank, as
    DistributedDataParallel keeps them (it broadcasts rank 0's buffers before each forward). Without
    --sync-bn each rank's statistics follow its own share of the batches; only rank 0's are saved, so every
    rank must validate with them for the recorded numbers to describe the saved file."""
    skip = tuple(skip_prefixes)
    groups = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and not (name + '.').startswith(skip):
            for buffer in layer.buffers(recurse=False):
                groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
    for group in groups.values():  # one broadcast per dtype and device, not one per layer
        flat = torch.cat([buffer.reshape(-1) for buffer in group])
        dist.broadcast(flat, src=0)
        _sync(flat)
        offset = 0
        for buffer in group:
            buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()


def broadcast_object(value):
    """Rank 0's value of a picklable object, on every rank."""
    if not _CURRENT.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def start_heartbeat(slot, rank):
    """Beat into ``slot`` (two shared doubles the spawning process watches) from now on."""
    global _HEARTBEAT
    _HEARTBEAT = Heartbeat(slot, rank)

def join(rank, world_size, local_rank, local_size, url, backend, device):
    """Join the job's process group as ``rank`` and make this process's ``current()`` say so."""
    global _CURRENT
    if device.startswith('cuda'):
        torch.cuda.set_device(torch.device(device))
    else:  # CPU workers share the node's cores instead of each starting a thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    try:
        dist.init_process_group(backend, init_method=url, rank=rank, world_size=world_size, timeout=PATIENT_TIMEOUT)
        step_timeout = datetime.timedelta(seconds=timeouts()[1] + STEP_TIMEOUT_MARGIN_S)
        step_group = dist.new_group(backend=backend, timeout=step_timeout)
    except (RuntimeError, ValueError, OSError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise KDZooError(f"rank {rank} could not join the process group at {url} ({reason}); check --dist-url "
                         f"(rank 0's node must be able to bind it and every node to reach it)") from None
    _CURRENT = Dist(rank, world_size, local_rank, local_size, backend, device, step_group)
    if rank != 0:
        # One console for the job: rank 0's lines. Errors and tracebacks (stderr) still show from every rank.
        sys.stdout = open(os.devnull, 'w')


def leave():
    """Leave the process group (end of a job)."""
    if dist.is_initialized():
        dist.destroy_process_group()
