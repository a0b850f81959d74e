"""Starting a multi-process job: one process per GPU (or per CPU worker with gloo), on one node or many.

Three launchers reach the same code (``launch``):
- ``--multiprocessing-distributed --dist-url tcp://host:port [--world-size NODES --rank NODE]``: this
  process spawns one worker per GPU of ``--gpu_id`` (``--nproc-per-node`` on a machine without CUDA)
  with torch.multiprocessing, as the SimKD repo does, and watches them; the global rank is
  ``node rank * processes per node + local rank``.
- ``torchrun --nproc_per_node N script.py ...``: the environment (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR/PORT) says it all; the script runs as one worker.
- ``--world-size N --rank R`` without ``--multiprocessing-distributed``: this process is rank R of N.
NCCL on GPUs, gloo on the CPU. What the processes do together is helper/distributed.py's.

Failure handling. Every worker keeps a heartbeat in shared memory: a thread beats every second (a
frozen process stops beating), and the collectives of a training step record when they began waiting.
The spawning process watches them: a worker that exits abnormally, stops beating for
``HANG_TIMEOUT_S``, or keeps the others waiting that long in a step's collective ends the job: the
workers get SIGTERM, then SIGKILL, and one line names the rank. A step can take long (the waits are
what count), as long as the ranks stay in step. The training-step collectives run in a process group
with a short timeout, and a worker that waits in one for more than ``WAIT_TIMEOUT_S`` gives up by
itself, so under torchrun (which ends the job when one worker fails) a hang ends the job too.
"""
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
import torch.distributed as dist

from helper import distributed
from helper.distributed import EXIT_GAVE_UP, Heartbeat, barrier_patient, timeouts
from helper import signals
from helper.errors import KDZooError

KILL_GRACE_S = 5         # SIGTERM, then SIGKILL after this long
# When the job itself is stopped, the workers get longer to finish the checkpoint they are writing (SLURM and
# Kubernetes kill after 30 s by default; a worker with nothing to write stops within a second).
STOP_GRACE_S = 25
EXIT_USER_ERROR, EXIT_FAILED = 2, 1  # a stop signal: 128 + its number (130, 143)


class JobFailedError(KDZooError):
    """A worker of a multi-process job died, hung or failed; the job was stopped (exit status 1)."""
    exit_status = 1


@dataclass
class Plan:
    """How this invocation runs: ``mode`` 'single', 'spawn', 'manual' (one rank of --world-size) or 'torchrun'."""
    mode: str
    nproc: int = 1          # processes started by this invocation
    world_size: int = 1     # processes in the job
    first_rank: int = 0     # global rank of this invocation's first process
    backend: str = 'gloo'
    devices: tuple = ()     # device per local process: ('cuda:0', ...) or ('cpu', ...)


def gpu_ids(gpu_id):
    """The GPU numbers of --gpu_id ('0,1,2,3')."""
    ids = [part.strip() for part in str(gpu_id).split(',') if part.strip()]
    if not ids or not all(part.isdigit() for part in ids):
        raise KDZooError(f"--gpu_id must be a comma-separated list of GPU numbers such as '0,1,2,3', got "
                         f"'{gpu_id}'")
    return [int(part) for part in ids]


def from_environment():
    """(rank, world size, local rank) when started by torchrun with more than one process, else None (a
    one-process torchrun is a plain run)."""
    if 'RANK' in os.environ and int(os.environ.get('WORLD_SIZE', '1') or 1) > 1:
        return int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0))
    return None


def make_plan(args):
    """Check the distributed flags against this machine and decide how to run; one line per mistake."""
    plan = _make_plan(args)
    if args.batch_size % plan.world_size:
        raise KDZooError(f"--batch_size {args.batch_size} is the global batch and must split evenly over the "
                         f"{plan.world_size} processes; pass a multiple of {plan.world_size}")
    if args.dali:
        from dataset.imagenet_dali import import_dali
        import_dali()  # one line naming the wheel when DALI is missing
        if args.dali == 'gpu' and not torch.cuda.is_available():
            raise KDZooError("--dali gpu decodes on a GPU, and no CUDA device is available; use --dali cpu or "
                             "drop --dali")
    return plan


def _make_plan(args):
    cuda = torch.cuda.is_available()
    ids = gpu_ids(args.gpu_id)
    visible = torch.cuda.device_count() if cuda else 0
    backend = args.dist_backend or ('nccl' if cuda else 'gloo')
    if backend == 'nccl' and not cuda:
        raise KDZooError("--dist-backend nccl needs CUDA GPUs and none is available; use gloo (the default "
                         "without a GPU)")
    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        raise KDZooError(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
    if args.world_size < 1 or not 0 <= args.rank < args.world_size:
        raise KDZooError(f"--rank {args.rank} must lie in 0..{args.world_size - 1} for --world-size "
                         f"{args.world_size} (the number of nodes with --multiprocessing-distributed)")

    env = from_environment()
    if env is not None:
        rank, world, local = env
        if cuda:
            if local >= visible:
                raise KDZooError(f"torchrun started local rank {local}, but this node has {visible} GPU(s); "
                                 f"pass --nproc_per_node {visible} or fewer to torchrun")
            device = f'cuda:{ids[local] if len(ids) > 1 else local}'
            if len(ids) > 1 and local >= len(ids):
                raise KDZooError(f"torchrun started local rank {local}, but --gpu_id {args.gpu_id} lists "
                                 f"{len(ids)} GPUs; list one per process or leave --gpu_id out")
        else:
            device = 'cpu'
        return Plan('torchrun', 1, world, rank, backend, (device,))

    if args.multiprocessing_distributed:
        nproc = args.nproc_per_node or len(ids)
        if cuda:
            if nproc > len(ids):
                raise KDZooError(f"--nproc-per-node {nproc} asks for more processes than the {len(ids)} GPU(s) "
                                 f"of --gpu_id {args.gpu_id}; one process per GPU")
            missing = [i for i in ids[:nproc] if i >= visible]
            if missing:
                raise KDZooError(f"--gpu_id {args.gpu_id} asks for {nproc} processes on GPUs {ids[:nproc]}, but "
                                 f"this machine has {visible} GPU(s) (0..{visible - 1}); pass fewer --gpu_id "
                                 f"numbers")
            devices = tuple(f'cuda:{i}' for i in ids[:nproc])
        else:
            devices = ('cpu',) * nproc
        world = args.world_size * nproc
        if world == 1:
            return Plan('single', devices=devices)
        return Plan('spawn', nproc, world, args.rank * nproc, backend, devices)

    if args.world_size > 1:
        if cuda and ids[0] >= visible:
            raise KDZooError(f"--gpu_id {args.gpu_id} names a GPU that is not there ({visible} visible)")
        return Plan('manual', 1, args.world_size, args.rank, backend, (f'cuda:{ids[0]}' if cuda else 'cpu',))
    return Plan('single')


def check_dist_url_bindable(url, rank):
    """Rank 0 hosts the rendezvous at --dist-url: say so in one line when that address cannot be bound."""
    if rank != 0 or not url.startswith('tcp://'):
        return
    parsed = urlparse(url)
    if not parsed.hostname or not parsed.port:
        raise KDZooError(f"--dist-url '{url}' needs a host and a port, e.g. tcp://127.0.0.1:23456")
    with socket.socket(socket.AF_INET6 if ':' in parsed.hostname else socket.AF_INET) as probe:
        # As the rendezvous server binds: a port left in TIME_WAIT by a finished job is free, a listening one not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((parsed.hostname, parsed.port))
        except OSError as err:
            raise KDZooError(f"cannot bind --dist-url {url} ({err.strerror or err}); pass a free port on an "
                             f"address of this machine, e.g. --dist-url tcp://127.0.0.1:{_free_port()}") from None


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(args, train):
    """Run ``train(args)`` as the flags say: here, as one rank of a job, or in spawned workers that this
    process watches. Returns what rank 0's ``train`` returned (None from a spawned job's other nodes)."""
    plan = make_plan(args)
    if plan.mode == 'single':
        return train(args)
    timeouts()  # a bad KDZOO_*_TIMEOUT value is one line here, before any process starts
    print(f"distributed: {plan.world_size} processes in all ({plan.backend}); this invocation runs rank(s) "
          f"{plan.first_rank}..{plan.first_rank + plan.nproc - 1} on {', '.join(plan.devices)}; global batch "
          f"{args.batch_size}", flush=True)
    if plan.mode == 'spawn':
        check_dist_url_bindable(args.dist_url, plan.first_rank)
        return _spawn(args, train, plan)
    url = 'env://' if plan.mode == 'torchrun' else args.dist_url
    if plan.mode == 'manual':
        check_dist_url_bindable(url, plan.first_rank)
    distributed.start_heartbeat([0.0, 0.0], plan.first_rank)
    local = int(os.environ.get('LOCAL_RANK', 0)) if plan.mode == 'torchrun' else 0
    local_size = int(os.environ.get('LOCAL_WORLD_SIZE', 1)) if plan.mode == 'torchrun' else 1
    distributed.join(plan.first_rank, plan.world_size, local, local_size, url, plan.backend, plan.devices[0])
    try:
        result = train(args)
        barrier_patient()
        return result
    finally:
        distributed.leave()




def _worker(local_rank, args, train, plan, slots, channels):
    """Entry point of a spawned worker: join, train, report to the watcher through its own pipe (an error
    line, or rank 0's result). Exit status 0, 2 (user error), 3 (lost the other ranks), 1 (a bug)."""
    channel = channels[local_rank]
    _die_with_parent()
    # SIGTERM from the watcher (or a scheduler) stops this worker as SIGINT does: rank 0 records
    # 'interrupted' and tells the watcher what it kept.
    signals.install()
    # tqdm would make a multiprocessing lock (a named semaphore) that a worker stopped by a signal never
    # releases, and Python's resource tracker would then warn about it after the job; a thread lock will do.
    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())
    rank = plan.first_rank + local_rank
    distributed.start_heartbeat(slots[local_rank], rank)
    try:
        distributed.join(rank, plan.world_size, local_rank, plan.nproc, args.dist_url, plan.backend,
                         plan.devices[local_rank])
        result = train(args)
        barrier_patient()
        if rank == plan.first_rank:
            channel.send(('result', result))
    except KDZooError as err:
        channel.send(('error', (rank, str(err), getattr(err, 'exit_status', EXIT_USER_ERROR))))
        sys.stdout.flush()
        os._exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as err:
        signum = getattr(err, 'signum', None) or signals.received() or signal.SIGINT
        if rank == 0 and getattr(err, 'detail', None):
            channel.send(('interrupted', err.detail))
        sys.stdout.flush()
        os._exit(128 + signum)
    except BaseException as err:
        if signals.received() is not None:
            # Stopping on a signal, and a collective broke because another rank stopped first.
            sys.stdout.flush()
            os._exit(128 + signals.received())
        if _lost_peer(err):
            # Another rank died or hung and the connection to it broke or timed out: that rank is the cause,
            # and the watcher names it; no traceback for this one.
            sys.stdout.flush()
            os._exit(EXIT_GAVE_UP)
        # A bug: show where, and let the watcher stop the others.
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)
    distributed.leave()
    sys.stdout.flush()


_LOST_PEER = ('Connection closed by peer', 'Connection reset by peer', 'Broken pipe', 'Timed out', 'timed out',
              'timeout', 'NCCL communicator was aborted')


def _lost_peer(err):
    """Whether ``err`` is a collective failing because another rank went away (gloo raises these as
    RuntimeError, also from inside autograd)."""
    return isinstance(err, (dist.DistError, RuntimeError)) and any(text in str(err) for text in _LOST_PEER)


def _die_with_parent():
    """SIGKILL this worker when the process that spawned it dies, whatever it is doing (Linux)."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(args, train, plan):
    import torch.multiprocessing as mp
    ctx = mp.get_context('spawn')
    slots = [ctx.RawArray('d', 2) for _ in range(plan.nproc)]
    for slot in slots:
        slot[Heartbeat.LAST] = time.time()  # the workers take a few seconds to start beating
    # One pipe per worker (no locks, so no semaphores left behind when a worker is killed).
    pipes = [ctx.Pipe(duplex=False) for _ in range(plan.nproc)]
    context = mp.start_processes(_worker, args=(args, train, plan, slots, [w for _, w in pipes]), nprocs=plan.nproc,
                                 join=False, start_method='spawn')
    processes = context.processes
    received = {'result': [], 'error': [], 'interrupted': []}

    def collect():  # read while the workers run: a large result would otherwise fill its pipe
        for reader, _ in pipes:
            try:
                while reader.poll():
                    kind, value = reader.recv()
                    received[kind].append(value)
            except (EOFError, OSError):
                pass
    try:
        failure = _watch(processes, slots, plan, collect)
    except KeyboardInterrupt as err:
        # Ctrl-C reaches the workers too (one process group); SIGTERM (a scheduler, kill) only this process,
        # so pass it on: the workers stop as on SIGINT, and rank 0 records 'interrupted' and says what it kept.
        _stop(processes, STOP_GRACE_S)
        collect()
        raise signals.Interrupted(getattr(err, 'signum', None) or signals.received() or signal.SIGINT,
                                  received['interrupted'][0] if received['interrupted'] else None) from None
    if failure is not None:
        _stop(processes)
        collect()
        if received['error']:
            rank, message, status = min(received['error'])
            error = KDZooError(message)
            error.exit_status = status
            raise error
        raise JobFailedError(failure)
    collect()
    for process in processes:
        process.join()
    return received['result'][0] if received['result'] else None


def _describe_exit(rank, process):
    code = process.exitcode
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    elif code == EXIT_GAVE_UP:
        how = "gave up waiting for the other ranks"
    elif code - 128 in (signal.SIGINT, signal.SIGTERM):
        how = f"was stopped by {signal.Signals(code - 128).name}"
    elif code == EXIT_USER_ERROR:
        how = "stopped with an error"
    else:
        how = f"failed with exit status {code} (its traceback is above)"
    return f"rank {rank} (pid {process.pid}) {how}"


def _watch(processes, slots, plan, collect):
    """Wait for the workers; None when all finished well, else a sentence saying which rank broke how:
    the first to exit abnormally, else one frozen (its heartbeat thread stopped), else, once some rank has
    waited the hang timeout in a training-step collective, a live rank that is not waiting (it hangs
    somewhere else)."""
    hang = timeouts()[0]
    # Starting (importing torch and the script) is not hanging: until its first beat a worker has the default
    # allowance at least, also when the hang timeout is set shorter.
    start_limit = max(hang, distributed.HANG_TIMEOUT_S)
    unstarted = [slot[Heartbeat.LAST] for slot in slots]  # what _spawn wrote; the first beat replaces it
    gave_up_since = None
    while True:
        time.sleep(0.5)
        collect()
        if all(p.exitcode == 0 for p in processes):
            return None
        now = time.time()
        rank = lambda i: plan.first_rank + i  # noqa: E731
        failed = [i for i, p in enumerate(processes) if p.exitcode not in (None, 0)]
        alive = [i for i, p in enumerate(processes) if p.exitcode is None]
        limit = [hang if slots[i][Heartbeat.LAST] != unstarted[i] else start_limit for i in range(len(slots))]
        frozen = [i for i in alive if now - slots[i][Heartbeat.LAST] > limit[i]]
        waited = [i for i in alive if slots[i][Heartbeat.WAITING] and now - slots[i][Heartbeat.WAITING] > hang]
        culprits = [i for i in failed if processes[i].exitcode != EXIT_GAVE_UP]
        # The cause first: a rank killed by a signal, then one with an error, then one that failed.
        culprits.sort(key=lambda i: (processes[i].exitcode >= 0, processes[i].exitcode != EXIT_USER_ERROR))
        if failed and not culprits and gave_up_since is None:
            gave_up_since = now  # give the rank that broke the connection a moment to be reaped
        if failed and not culprits and now - gave_up_since < 3:
            continue
        if culprits:
            i = culprits[0]
            if processes[i].exitcode == EXIT_USER_ERROR:
                return _describe_exit(rank(i), processes[i])
            return f"{_describe_exit(rank(i), processes[i])}; the job was stopped"
        if frozen:
            i = frozen[0]
            return (f"rank {rank(i)} (pid {processes[i].pid}) stopped responding for {limit[i]:g} s (hung); "
                    f"the job was stopped")
        if waited or failed:
            stuck = [i for i in alive if not slots[i][Heartbeat.WAITING]]
            if stuck:
                i = stuck[0]
                return (f"rank {rank(i)} (pid {processes[i].pid}) made no progress (hung): the others waited "
                        f"{hang:g} s for it in a collective; the job was stopped")
            return (f"ranks {rank(0)}..{rank(len(processes) - 1)} waited {hang:g} s in a collective for a "
                    f"rank of another node, which died or hung; the job was stopped")


def _stop(processes, grace_s=KILL_GRACE_S):
    """SIGTERM every live worker, SIGKILL those still there after ``grace_s``; reap them all."""
    for p in processes:
        if p.exitcode is None:
            p.terminate()
    deadline = time.time() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.time()))
    for p in processes:
        if p.exitcode is None:
            p.kill()
            p.join()
