"""The one training loop, shared by train_teacher.py, train_student.py and train_online_mcl.py.

Per epoch: set the lr, train over the loader, validate the deployed network, then write the
checkpoints (atomically), TensorBoard scalars and the metrics JSON. A NaN or infinite loss stops the
run before anything of that epoch is saved, so the last checkpoint on disk is always a good one.
Everything a rerun needs (weights, optimiser, method state, seed, history) is in ``<name>_last.pth``,
and the data order is a function of (seed, epoch), so ``--resume`` reproduces the uninterrupted run.

In a multi-process job (helper/distributed.py) every process runs this loop on its share of each global
batch: gradients are averaged over the processes after ``backward``, the epoch's training and validation
numbers are summed over them, a non-finite loss on any process stops all of them, and only rank 0 writes
files while the others wait for it.
"""
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from helper import distributed
from helper.checkpoint import atomic_save, load_checkpoint
from helper.errors import CheckpointError, KDZooError, NonFiniteLossError
from helper.metrics import RunningSums, correct_topk
from helper.runtime import autocast
from helper.schedule import learning_rate_at, set_learning_rate


class Trainer:
    """Runs one stage of training. The main stage validates and writes every file; the init stage of
    two-stage methods (AB, FT, FSP) trains at a constant lr, skips validation, and keeps only
    ``<name>_init.pth`` so that it too can be resumed."""

    def __init__(self, objective, data, optimizer, args, files, logger, device, precision, *, stage='main',
                 epochs=None, lr_at=None):
        self.stage = stage
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

    # ---- resume -------------------------------------------------------------------------------
    def resume(self, path):
        checkpoint = load_checkpoint(path, '--resume checkpoint')
        saved = checkpoint.get('kdzoo') if isinstance(checkpoint, dict) else None
        if saved is None:
            raise CheckpointError(f"'{path}' has no resume data (it was not written by kdzoo's "
                                  f"<name>_last.pth); pass the run's <name>_last.pth or use --resume auto")
        if saved['epoch'] >= self.epochs and self.stage == 'main':
            raise KDZooError(f"the run in '{path}' already finished {saved['epoch']} of {self.epochs} "
                             f"epochs; nothing to resume (pass a larger --epochs to train on)")
        self.objective.load_resume_state(checkpoint['model'], saved['objective'])
        self.optimizer.load_state_dict(checkpoint['optimizer'])
        if self.scaler is not None and saved.get('scaler'):
            self.scaler.load_state_dict(saved['scaler'])
        self.state = {k: saved[k] for k in self.state}
        print(f"resumed {self.stage} stage from '{path}' after epoch {self.state['epoch']}")

    # ---- the loop -----------------------------------------------------------------------------
    # fit() is begin_epoch, train_step per batch, end_epoch per epoch; a pack of students
    # (engine/pack.py) drives several Trainers through the same pieces over one shared loader.
    def fit(self):
        first = self.state['epoch'] + 1
        self.sync_ranks()
        progress = self.progress_bar(max(self.epochs - first + 1, 0) * len(self.data.train))
        try:
            for epoch in range(first, self.epochs + 1):
                train = self.train_epoch(epoch, progress)
                self.end_epoch(epoch, train, progress)
        finally:
            progress.close()
        self.finish()
        return self.state

    def sync_ranks(self):
        """Before the first epoch of a multi-process job: every rank takes rank 0's weights."""
        if self.dist.enabled:
            # Identical by seeding already; this makes sure (and covers a resume read differently).
            distributed.broadcast_state(self.objective, self.objective.rebuilt_prefixes)

    def progress_bar(self, steps):
        return tqdm(total=steps, unit='step', dynamic_ncols=True, disable=None if self.dist.is_main else True,
                    leave=False)

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
        if self.scaler is None:
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
        top1, = correct_topk(out.logits.detach(), batch.targets, ks=(1,))
        self._sums.add({'loss': loss, **out.losses, 'top1': top1 * (100.0 / n)}, n)
        if step % self._check_every == 0 or step == self._steps:
            self._stop_if_not_finite(self._first_bad, epoch, out.losses)
        if step % self.args.print_freq == 0:
            means = self._sums.means()
            progress.set_postfix(loss=f"{means['loss']:.3f}", top1=f"{means['top1']:.1f}")
        progress.update(1)

    def train_means(self):
        """The epoch's training means (over every process's samples in a multi-process job)."""
        if self.dist.enabled:
            return self._global_means(self._sums)
        return self._sums.means()

    def end_epoch(self, epoch, train, progress):
        """Validate (main stage), record the epoch, write the checkpoints and logs."""
        state = self.state
        if self.stage == 'main':
            top1, top5, val_loss, extra = self.evaluate()
        else:
            top1, top5, val_loss, extra = math.nan, math.nan, math.nan, {}
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
            self.logger.epoch_end(record, state, progress, self.stage, self.epochs)
        if self.dist.enabled:
            distributed.barrier_patient()  # the others wait while rank 0 writes

    def finish(self):
        if self.stage == 'main' and self.dist.is_main:
            self.logger.finish(self.state, status='finished')

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
        if self.dist.is_main:
            self.logger.finish(self.state, status=f'stopped: non-finite loss at epoch {epoch} step {bad_step}')
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
    def save(self, epoch, top1, is_best):
        """RepDistiller's files (best, every save_freq epochs, last), last holding the resume data."""
        model_state = self.objective.model.state_dict()
        extras = self.objective.checkpoint_extras()
        common = dict(model=model_state, epoch=epoch, **extras)
        resume = dict(self.state, objective=self.objective.resume_state(),
                      scaler=self.scaler.state_dict() if self.scaler else None)
        last = dict(common, optimizer=self.optimizer.state_dict(), opt=_plain(vars(self.args)), kdzoo=resume)
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


def _plain(values):
    """Arguments as plain Python values, so checkpoints load with torch.load(weights_only=True)."""
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else str(v)
            for k, v in values.items()}
