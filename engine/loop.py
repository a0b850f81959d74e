"""The one training loop, shared by train_teacher.py, train_student.py and train_online_mcl.py.

Per epoch: set the lr, train over the loader, validate the deployed network, then write the
checkpoints (atomically), TensorBoard scalars and the metrics JSON. A NaN or infinite loss stops the
run before anything of that epoch is saved, so the last checkpoint on disk is always a good one.
Everything a rerun needs (weights, optimiser, method state, seed, history) is in ``<name>_last.pth``,
and the data order is a function of (seed, epoch), so ``--resume`` reproduces the uninterrupted run.

In a multi-process job (helper/distributed.py) every process runs this loop on its share of each global
batch: gradients are averaged over the processes after ``backward``, rank 0's BatchNorm statistics are
given to every process before validation (so the recorded numbers describe the saved weights), the
epoch's training and validation numbers are summed over the processes, a non-finite loss on any process
stops all of them, and only rank 0 writes files while the others wait for it.

Stopping. SIGINT/SIGTERM (helper/signals.py) wait for an epoch's writes to finish, then stop the run with
``interrupted`` in metrics.json; a full disk stops it with the previous checkpoint intact. Either way
metrics.json describes the epochs whose checkpoint is on disk. The closing writes (a deployable network,
``finished``) come after the last checkpoint, and ``--resume auto`` redoes them for a run stopped between.
"""
import contextlib
import math
import os
import signal
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from helper import console, distributed, signals
from helper.checkpoint import atomic_save, load_checkpoint
from helper.errors import CheckpointError, DiskFullError, KDZooError, NonFiniteLossError
from helper.logger import _duration
from helper.metrics import RunningSums, correct_topk
from helper.provenance import state_dict_sha256
from helper.runtime import autocast
from helper.schedule import learning_rate_at, set_learning_rate
from models.weights import extract_state_dict, load_state_strictly


class Trainer:
    """Runs one stage of training. The main stage validates and writes every file; the init stage of
    two-stage methods (AB, FT, FSP) trains at a constant lr, skips validation, and keeps only
    ``<name>_init.pth`` so that it too can be resumed."""

    def __init__(self, objective, data, optimizer, args, files, logger, device, precision, *, stage='main',
                 epochs=None, lr_at=None, record=None):
        """``record`` (helper/provenance.RunRecord): the values the run found (its seed, the teacher's hash
        and top-1), merged into the arguments that checkpoints keep as ``opt``."""
        self.stage = stage
        self.record = record
        self.epochs = epochs or args.epochs
        self.lr_at = lr_at or (lambda epoch: learning_rate_at(epoch, args))
        self.objective = objective
        self.data = data
        self.optimizer = optimizer
        self.args = args
        self.files = files        # RunFiles: where checkpoints go
        self.logger = logger      # RunLogger: TensorBoard, JSON, console
        self.device = device
        self.precision = precision
        # fp16 needs loss scaling to keep small gradients; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler('cuda') if precision == 'fp16' else None
        self.dist = distributed.current()
        self.state = dict(epoch=0, best_acc=0.0, best_top5=0.0, best_epoch=0, history=[], wall_time=0.0)
        self.on_disk = _snapshot(self.state)  # the state as of the last epoch whose files were all written
        self.resumed = False
        self.finished = False
        self.clock = None  # (time, steps) at the start of fit, for the --print_freq lines' ETA

    # ---- resume -------------------------------------------------------------------------------
    def resume(self, path):
        checkpoint = load_checkpoint(path, '--resume checkpoint')
        saved = checkpoint.get('kdzoo') if isinstance(checkpoint, dict) else None
        if saved is None:
            self.resume_from_weights(checkpoint, path)
            return
        if saved['epoch'] > self.epochs and self.stage == 'main':  # RunFiles.resume_path says so earlier
            raise KDZooError(f"the run in '{path}' has trained {saved['epoch']} epochs, more than --epochs "
                             f"{self.epochs}; nothing to resume (pass --epochs {saved['epoch']} or more)")
        self.objective.load_resume_state(checkpoint['model'], saved['objective'])
        self.optimizer.load_state_dict(checkpoint['optimizer'])
        if self.scaler is not None and saved.get('scaler'):
            self.scaler.load_state_dict(saved['scaler'])
        self.state = {k: saved[k] for k in self.state}
        self.on_disk = _snapshot(self.state)
        self.resumed = True
        if self.stage == 'main' and saved['epoch'] == self.epochs:
            print(f"the run in '{path}' trained all {self.epochs} epochs but stopped before its closing writes; "
                  f"finishing it")
        else:
            print(f"resumed {self.stage} stage from '{path}' after epoch {self.state['epoch']}")

    def resume_from_weights(self, checkpoint, path):
        """Continue a run another repo wrote (RepDistiller's ckpt_epoch_N.pth, mdistiller's ``latest`` or
        ``epoch_N``, whose student part is taken): its weights, its epoch, and its SGD momentum when that
        lines up parameter by parameter with ours. The method's own modules (projectors, memory banks)
        have no counterpart there and start afresh, and so does the best-epoch record."""
        if self.stage != 'main':
            raise CheckpointError(f"'{path}' has no kdzoo resume data, and a foreign checkpoint can only "
                                  f"continue the main stage; pass the run's <name>_init.pth")
        state = extract_state_dict(checkpoint, path)
        epoch = checkpoint.get('epoch', 0) if isinstance(checkpoint, dict) else 0
        try:
            epoch = int(epoch)
        except (TypeError, ValueError):
            raise CheckpointError(f"'{path}' records its epoch as {epoch!r}, not a number; it cannot be "
                                  f"resumed") from None
        if epoch >= self.epochs:
            raise KDZooError(f"the run in '{path}' already finished {epoch} of {self.epochs} epochs; nothing "
                             f"to resume (pass a larger --epochs to train on)")
        load_state_strictly(self.objective.model, state, path, self.files.model_name, '--resume checkpoint')
        momentum = self._load_foreign_momentum(checkpoint.get('optimizer') if isinstance(checkpoint, dict)
                                               else None)
        self.state['epoch'] = epoch
        print(f"resumed from the weights in '{path}' after epoch {epoch} (no kdzoo resume data): "
              f"{'SGD momentum restored' if momentum else 'SGD momentum starts at zero'}; the method's own "
              f"modules and the best-epoch record start afresh")

    def _load_foreign_momentum(self, saved):
        """Load another repo's SGD state when its parameters are ours in the same order and shapes (true
        of a student-only optimiser such as KD's or DKD's); our lr, momentum and weight decay stay."""
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        try:
            buffers = [saved['state'].get(index, {}).get('momentum_buffer')
                       for group in saved['param_groups'] for index in group['params']]
        except (TypeError, KeyError, AttributeError):
            return False
        if len(buffers) != len(params) or not all(
                torch.is_tensor(b) and b.shape == p.shape for b, p in zip(buffers, params)):
            return False
        for param, buffer in zip(params, buffers):
            self.optimizer.state[param]['momentum_buffer'] = buffer.to(param.device, param.dtype).clone()
        return True

    # ---- the loop -----------------------------------------------------------------------------
    # fit() is begin_epoch, train_step per batch, end_epoch per epoch and finish; a pack of students
    # (engine/pack.py) drives several Trainers through the same pieces over one shared loader.
    def fit(self, closing=None):
        """Train the remaining epochs. The main stage then runs ``closing(state)`` on rank 0 (files made from
        the final weights: SimKD's and NORM's deployable network) and only then writes ``finished``."""
        first = self.state['epoch'] + 1
        self.sync_ranks()
        progress = self.progress_bar(max(self.epochs - first + 1, 0) * len(self.data.train))
        try:
            with self.stopping():
                self.rewrite_after_resume()
                for epoch in range(first, self.epochs + 1):
                    train = self.train_epoch(epoch, progress)
                    self.end_epoch(epoch, train, progress)
                self.finish(closing)
        finally:
            progress.close()
        return self.state

    def sync_ranks(self):
        """Before the first epoch of a multi-process job: every rank takes rank 0's weights."""
        if self.dist.enabled:
            # Identical by seeding already; this makes sure (and covers a resume read differently).
            distributed.broadcast_state(self.objective, self.objective.rebuilt_prefixes)

    def progress_bar(self, steps):
        """The bar over this stage's remaining ``steps``; training starts, so log.txt is written from here on."""
        self.clock = dict(start=time.time(), total=steps, done=0)
        console.commit()  # the command was not refused: log.txt from here on
        return tqdm(total=steps, unit='step', dynamic_ncols=True, disable=None if self.dist.is_main else True,
                    leave=False)

    @contextlib.contextmanager
    def stopping(self):
        """How a run stops: a signal records ``interrupted``, a full disk ``stopped: disk full``, each with
        one line saying where the last complete epoch is."""
        try:
            yield
        except KeyboardInterrupt as err:
            raise self._interrupted(getattr(err, 'signum', None)) from None
        except DiskFullError as err:
            self._record('stopped: disk full')
            kept = self._kept()
            if self.stage == 'main' and self.on_disk['epoch'] == self.epochs:
                then = "finish the run with --resume auto once there is room"
            else:
                then = "continue with --resume auto once there is room" if kept else "start the run again then"
            raise DiskFullError(f"{err}; {kept + '; ' if kept else ''}{then}") from None
        except Exception:
            if signals.received() is None:
                raise
            # A stop signal came first: this is a collective that broke because another process of the job
            # stopped on it before this one did.
            raise self._interrupted(signals.received()) from None

    def rewrite_after_resume(self):
        """What follows <name>_last.pth in an epoch (the online peers' files) may have been cut off by the
        kill that stopped a resumed run; write it again, and say that the run runs again."""
        state = self.state
        if self.resumed and self.stage == 'main' and self.dist.is_main and state['history']:
            with signals.deferred():
                self.objective.after_epoch(state, self.files)
                self.logger.write(state, status='running')

    def begin_epoch(self, epoch):
        """Set the epoch's lr, training mode and data epoch; open the epoch's sums."""
        self._started = time.time()
        self._lr = self.lr_at(epoch)
        set_learning_rate(self.optimizer, self._lr)
        self.objective.train()
        self.data.train.set_epoch(epoch)
        self._sums = RunningSums()
        # On the CPU reading the loss back is free, so check it every step; on a GPU that would stall
        # the queue, so remember the first bad step on the device and look at it every print_freq steps.
        self._check_every = 1 if self.device.type == 'cpu' else self.args.print_freq
        self._first_bad = torch.full((), -1, device=self.device)
        self._params = [p for group in self.optimizer.param_groups for p in group['params']]
        self._steps = len(self.data.train)
        self._window = dict(time=time.time(), images=0)  # images since the last --print_freq line
        if self.clock is None:  # a pack member: another member's Trainer opened the progress bar
            self.clock = dict(start=time.time(), total=max(self.epochs - epoch + 1, 0) * self._steps, done=0)

    def train_epoch(self, epoch, progress):
        self.begin_epoch(epoch)
        for step, batch in enumerate(self.data.train, 1):
            self.train_step(batch, epoch, step, progress)
        return self.train_means()

    def train_step(self, batch, epoch, step, progress):
        """One optimisation step on ``batch`` (the ``step``-th of the epoch, from 1)."""
        with autocast(self.device, self.precision):
            out = self.objective.step(batch, epoch)
        loss = sum(out.losses.values())
        self._first_bad = torch.where((self._first_bad < 0) & ~torch.isfinite(loss.detach()),
                                      torch.full_like(self._first_bad, step), self._first_bad)
        self.optimizer.zero_grad(set_to_none=True)
        if getattr(self.optimizer, 'separates_kd', False):
            self.dot_step(out.losses, batch.targets.size(0))
        elif self.scaler is None:
            loss.backward()
            if self.dist.enabled:
                distributed.all_reduce_gradients(self._params, batch.targets.size(0))
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            if self.dist.enabled:  # every rank then sees the same inf/NaN and skips the same steps
                distributed.all_reduce_gradients(self._params, batch.targets.size(0))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        # Objectives with a second optimisation of their own (L-MCL's meta step) run it here, after the
        # main update, at the training precision.
        with autocast(self.device, self.precision):
            self.objective.after_step(batch, epoch, step, self.optimizer.param_groups[0]['lr'])
        n = batch.targets.size(0)
        self._window['images'] += n * self.dist.world_size
        top1, = correct_topk(out.logits.detach(), batch.targets, ks=(1,))
        self._sums.add({'loss': loss, **out.losses, 'top1': top1 * (100.0 / n)}, n)
        if step % self._check_every == 0 or step == self._steps:
            self._stop_if_not_finite(self._first_bad, epoch, out.losses)
        self.clock['done'] += 1
        if step % self.args.print_freq == 0:
            means = self._sums.means()  # waits for the device, so the time below covers the finished steps
            progress.set_postfix(loss=f"{means['loss']:.3f}", top1=f"{means['top1']:.1f}")
            if self.dist.is_main:
                self.logger.step(self.step_line(epoch, step, means, self._window), progress)
            self._window = dict(time=time.time(), images=0)
        progress.update(1)

    def dot_step(self, losses, n):
        """--dot (helper/dot.py), as mdistiller's DOT trainer: backward of every term but 'ce' (the KD
        gradient, kept by ``step_kd``), then of 'ce' alone, then one step that applies both."""
        kd = sum(value for key, value in losses.items() if key != 'ce')
        if torch.is_tensor(kd) and kd.requires_grad:  # else no distillation gradient this step (a constant term)
            kd.backward(retain_graph=True)
            if self.dist.enabled:
                distributed.all_reduce_gradients(self._params, n)
        self.optimizer.step_kd()
        self.optimizer.zero_grad(set_to_none=True)
        losses['ce'].backward()
        if self.dist.enabled:
            distributed.all_reduce_gradients(self._params, n)
        self.optimizer.step()

    def train_means(self):
        """The epoch's training means (over every process's samples in a multi-process job)."""
        if self.dist.enabled:
            return self._global_means(self._sums)
        return self._sums.means()

    def end_epoch(self, epoch, train, progress):
        """Validate (main stage) with rank 0's BatchNorm statistics, record the epoch, write the checkpoints
        and logs; a stop signal waits until they are all written."""
        state = self.state
        if self.dist.enabled:
            distributed.broadcast_batchnorm_buffers(self.objective, self.objective.rebuilt_prefixes)
        if self.stage == 'main':
            top1, top5, val_loss, extra = self.evaluate()
        else:
            top1, top5, val_loss, extra = math.nan, math.nan, math.nan, {}
        with signals.deferred():  # the epoch's state and all of its files change together
            state['wall_time'] += time.time() - self._started
            state['epoch'] = epoch
            # the first validated epoch always writes <name>_best.pth, even at 0% (a tiny or random data set)
            if top1 > state['best_acc'] or (state['best_epoch'] == 0 and self.stage == 'main'):
                state.update(best_acc=top1, best_top5=top5, best_epoch=epoch)
            record = dict(epoch=epoch, lr=self._lr, **{f'train_{k}': v for k, v in train.items()},
                          val_top1=top1, val_top5=top5, val_loss=val_loss, **extra,
                          epoch_time=time.time() - self._started)
            state['history'].append(record)
            if self.dist.is_main:
                self.save(epoch, top1, is_best=state['best_epoch'] == epoch)
                if self.stage == 'main':
                    self.objective.after_epoch(state, self.files)
            self.on_disk = _snapshot(state)  # the checkpoints hold this epoch now
            if self.dist.is_main:
                self.logger.epoch_end(record, state, progress, self.stage, self.epochs)
        if self.dist.enabled:
            distributed.barrier_patient()  # the others wait while rank 0 writes

    def finish(self, closing=None):
        """The main stage's closing writes on rank 0: ``closing(state)``, then ``finished``."""
        if self.stage == 'main' and self.dist.is_main:
            with signals.deferred():
                if closing is not None:
                    closing(self.state)
                self.logger.finish(self.state, status='finished', weights=self.weights_sha256())
                self.finished = True

    def _kept(self):
        """Where the last complete epoch is, in words; None when there is none."""
        done = self.on_disk['epoch']
        if done and self.stage == 'main':
            return f"epoch {done} of {self.epochs} is saved in '{self.files.last}'"
        if done:
            return f"{self.stage} epoch {done} of {self.epochs} is saved in '{self.files.stage_checkpoint(self.stage)}'"
        init = self.files.stage_checkpoint('init')
        if self.stage == 'main' and os.path.isfile(init):
            return f"the init stage is saved in '{init}'"
        return None

    def _interrupted(self, signum):
        """The Interrupted to end the run with, after recording ``interrupted`` in metrics.json."""
        signum = signum or signals.received() or signal.SIGINT
        if self.finished:  # the signal came during the closing writes, which it let finish
            return signals.Interrupted(signum, f"the run had finished; its files in '{self.files.folder}' are "
                                               f"complete")
        self._record('interrupted')
        kept = self._kept()
        detail = (f"{kept}; continue with --resume auto" if kept else
                  "no epoch had finished, so nothing was saved; start the run again")
        return signals.Interrupted(signum, detail)

    def _record(self, status):
        """Write ``status`` to metrics.json, over the epochs whose checkpoints are on disk (rank 0, main
        stage). Best effort: when even this does not fit on the disk, the error that stopped the run is the
        one to report."""
        if self.stage != 'main' or not self.dist.is_main:
            return
        with signals.deferred(then_raise=False):
            try:
                self.logger.finish(self.on_disk, status=status)
            except (OSError, KDZooError):
                try:  # TensorBoard's file could not be closed (a full disk); the small metrics.json may still fit
                    self.logger.write(self.on_disk, status=status)
                except (OSError, KDZooError):
                    pass

    def weights_sha256(self):
        """sha256 (helper/provenance.state_dict_sha256) of the last weights and of <name>_best.pth's: a
        student that loads either as its teacher records the same hash, which ties it to this run."""
        hashes = dict(last=state_dict_sha256(self.objective.model.state_dict()))
        try:
            best = load_checkpoint(self.files.best, 'best checkpoint')
            hashes['best'] = state_dict_sha256(best['model'])
        except (CheckpointError, KeyError, TypeError):
            pass  # a missing or odd best file leaves only 'last'
        return hashes

    def step_line(self, epoch, step, means, window):
        """'epoch 3 step 100/782  loss 2.3456 (ce 1.2000, kd 1.1456)  top-1 45.3%  lr 0.05  1234 img/s
        eta 1h23m': running means of this epoch (this process's share), images/s of the whole job since the
        last line, and the time left in this stage at the mean pace so far. (Not 'epoch 3/240', which
        starts the epoch's closing line.)"""
        now = time.time()
        terms = ', '.join(f"{k} {v:.4f}" for k, v in means.items() if k not in ('loss', 'top1'))
        rate = window['images'] / max(now - window['time'], 1e-9)
        clock = self.clock
        eta = (now - clock['start']) / max(clock['done'], 1) * max(clock['total'] - clock['done'], 0)
        stage = '' if self.stage == 'main' else f"{self.stage} "
        return (f"{stage}epoch {epoch} step {step}/{len(self.data.train)}  loss {means['loss']:.4f}"
                f"{f' ({terms})' if terms else ''}  top-1 {means['top1']:.1f}%  "
                f"lr {self.optimizer.param_groups[0]['lr']:.4g}  {rate:.0f} img/s  eta {_duration(eta)}")

    def _global_means(self, sums):
        """The epoch's training means over every process's samples."""
        names = sorted(sums.sums)
        totals = torch.stack([sums.sums[name].float() for name in names]
                             + [torch.tensor(float(sums.count), device=self.device)])
        totals = distributed.all_reduce_patient(totals).tolist()
        return {name: value / max(totals[-1], 1) for name, value in zip(names, totals)}

    def _stop_if_not_finite(self, first_bad, epoch, losses):
        if self.dist.enabled:
            # Every process stops at the same check, at the earliest bad step of any of them.
            never = torch.iinfo(torch.int64).max
            bad = torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad).to(torch.int64)
            bad = int(distributed.all_reduce_step(bad.reshape(1), op=torch.distributed.ReduceOp.MIN))
            first_bad = torch.tensor(-1 if bad == never else bad)
        bad_step = int(first_bad)
        if bad_step < 0:
            return
        terms = ', '.join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        self._record(f'stopped: non-finite loss at epoch {epoch} step {bad_step}')
        where = self.files.last if self.stage == 'main' else self.files.stage_checkpoint(self.stage)
        kept = (f"the last good checkpoint is '{where}' (epoch {self.state['epoch']})"
                if self.state['epoch'] else "no epoch had finished, so no checkpoint was written")
        raise NonFiniteLossError(f"the loss became NaN or infinite at epoch {epoch}, step {bad_step} "
                                 f"({terms}); {kept}; lower --learning_rate or the loss weights")

    @torch.no_grad()
    def evaluate(self, loader=None):
        """Top-1, top-5 (percent), mean cross-entropy of the deployed network, and the objective's extra
        numbers for the epoch record (a dict; empty but for online training)."""
        self.objective.eval()
        return self.objective.validate(loader or self.data.val, self.device, self.precision)

    # ---- checkpoints --------------------------------------------------------------------------
    def written_args(self):
        return self.record.written(self.args) if self.record is not None else vars(self.args)

    def save(self, epoch, top1, is_best):
        """RepDistiller's files (best, every save_freq epochs, last), last holding the resume data."""
        model_state = self.objective.model.state_dict()
        extras = self.objective.checkpoint_extras()
        common = dict(model=model_state, epoch=epoch, **extras)
        provenance = getattr(self.logger, 'provenance', None)
        if provenance:  # what ran, on what: see helper/provenance.py
            common['provenance'] = provenance
        resume = dict(self.state, stage=self.stage, objective=self.objective.resume_state(),
                      scaler=self.scaler.state_dict() if self.scaler else None)
        last = dict(common, optimizer=self.optimizer.state_dict(), opt=_plain(self.written_args()), kdzoo=resume)
        if self.stage != 'main':
            atomic_save(last, self.files.stage_checkpoint(self.stage))
            return
        if is_best:
            atomic_save(dict(common, best_acc=top1, optimizer=self.optimizer.state_dict()), self.files.best)
        if epoch % self.args.save_freq == 0:
            atomic_save(dict(common, accuracy=top1, optimizer=self.optimizer.state_dict()),
                        self.files.periodic(epoch))
        atomic_save(dict(last, accuracy=top1, best_acc=self.state['best_acc']), self.files.last)


@torch.no_grad()
def evaluate_predictions(predict, loader, device, precision):
    """Top-1, top-5 and mean cross-entropy of ``predict`` over a loader of Batches."""
    correct1 = correct5 = loss_sum = torch.zeros((), device=device)
    count = 0
    for batch in loader:
        with autocast(device, precision):
            logits = predict(batch.images)
        logits = logits.float()
        c1, c5 = correct_topk(logits, batch.targets, ks=(1, 5))
        correct1, correct5 = correct1 + c1, correct5 + c5
        loss_sum = loss_sum + F.cross_entropy(logits, batch.targets, reduction='sum')
        count += batch.targets.size(0)
    if distributed.current().enabled:  # each process scored its own part of the validation set
        totals = torch.stack([correct1.float(), correct5.float(), loss_sum.float(),
                              torch.tensor(float(count), device=device)])
        correct1, correct5, loss_sum, count = distributed.all_reduce_patient(totals).tolist()
        count = int(count)
    if count == 0:
        return 0.0, 0.0, math.nan
    return 100.0 * float(correct1) / count, 100.0 * float(correct5) / count, float(loss_sum) / count


def _snapshot(state):
    """A copy of the loop's state that later epochs do not change (records are never modified)."""
    return dict(state, history=list(state['history']))


def _plain(values):
    """Arguments as plain Python values, so checkpoints load with torch.load(weights_only=True)."""
    return {k: v if _is_plain(v) else str(v) for k, v in values.items()}


def _is_plain(value):
    if isinstance(value, dict):  # e.g. the resolved defaults: kept when plain all through
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, (int, float, str, bool, type(None)))
