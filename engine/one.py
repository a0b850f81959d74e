"""ONE (On-the-fly Native Ensemble, Lan et al., NeurIPS 2018) as an Objective of the shared loop, as the
official cifar_one.py trains it (Lan1991Xu/ONE_NeurIPS2018).

Per step: cross-entropy on every branch and on the gate's ensemble, plus w(epoch) times the sum over the
branches of T^2 KL(ensemble || branch) at T = 3, the ensemble's distribution detached (it is the teacher).
w is the official sigmoid ramp-up, exp(-5 (1 - e / R)^2) for the 0-based epoch e < R, then 1, with
R = ``--consistency_rampup`` 80. As the official ``KLLoss``, 1e-7 is added to the teacher's probabilities
(the target is then not renormalised). Validation scores every branch and the ensemble (ONE-E); branch 0,
the plain zoo network, is the deployed one (the official best_acc is its accuracy too) and is exported
after every epoch as a plain zoo checkpoint.
"""
import math
import os

import torch
import torch.nn.functional as F

from helper import distributed
from helper.checkpoint import atomic_save
from helper.metrics import correct_topk
from engine.objective import Objective, StepOutput
from helper.run_files import RunFiles
from helper.runtime import autocast

ONE_T = 3.0  # the official KLLoss hard-codes T = 3
TARGET_EPS = 1e-7  # added to the teacher's probabilities by the official KLLoss


def sigmoid_rampup(epoch, length):
    """The official consistency weight at a 0-based epoch: exp(-5 (1 - e / length)^2), 1 from ``length`` on."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def one_kl(student_logits, teacher_logits, temperature=ONE_T):
    """T^2 * sum over classes of (p + 1e-7) (log(p + 1e-7) - log q), averaged over the batch, with
    p = softmax(teacher / T) detached and q = softmax(student / T): the official KLLoss."""
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=1) + TARGET_EPS
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature ** 2 * (target * (target.log() - log_q)).sum() / student_logits.size(0)


class ONEObjective(Objective):
    """The ONE network (``model``: backbone = branch 0, further branches, gate) trained by the ONE loss."""

    def __init__(self, network, args):
        super().__init__()
        self.model = network
        self.temperature = args.kd_T
        self.rampup = args.consistency_rampup

    def step(self, batch, epoch):
        logits, ensemble = self.model(batch.images)
        targets = batch.targets
        weight = sigmoid_rampup(epoch - 1, self.rampup)  # our epochs are 1-based, the official 0-based
        losses = dict(
            ce=sum(F.cross_entropy(branch, targets) for branch in logits),
            ce_ensemble=F.cross_entropy(ensemble, targets),
            kd=weight * sum(one_kl(branch, ensemble, self.temperature) for branch in logits))
        return StepOutput(losses=losses, logits=logits[0])

    def predict(self, images):
        """Branch 0 alone: the plain zoo network, as deployed."""
        return self.model.backbone(images)

    @torch.no_grad()
    def validate(self, loader, device, precision):
        """Branch 0's top-1/top-5/loss, and ``val_branch<i>_top1`` for every branch and ``val_ensemble_top1``
        (ONE-E, the gate's ensemble) for the epoch record; one pass over the loader."""
        heads = len(self.model.branches) + 2  # the branches, then the ensemble
        correct = torch.zeros(heads, device=device)
        correct5 = loss_sum = torch.zeros((), device=device)
        count = 0
        for batch in loader:
            with autocast(device, precision):
                logits, ensemble = self.model(batch.images)
            outputs = torch.stack([*logits, ensemble]).float()  # (heads, B, classes)
            correct = correct + (outputs.argmax(-1) == batch.targets).sum(-1)
            correct5 = correct5 + correct_topk(outputs[0], batch.targets, ks=(5,))[0]
            loss_sum = loss_sum + F.cross_entropy(outputs[0], batch.targets, reduction='sum')
            count += batch.targets.size(0)
        totals = torch.cat([correct.float(), torch.stack([correct5.float(), loss_sum.float()]),
                            torch.tensor([float(count)], device=device)])
        if distributed.current().enabled:  # each process scored its own part of the validation set
            totals = distributed.all_reduce_patient(totals)
        count = max(int(totals[-1]), 1)
        top1 = (100.0 * totals[:heads] / count).tolist()
        extra = {f'val_branch{i}_top1': value for i, value in enumerate(top1[:-1])}
        extra['val_ensemble_top1'] = top1[-1]
        return top1[0], 100.0 * float(totals[heads]) / count, float(totals[heads + 1]) / count, extra

    def after_epoch(self, state, files):
        """Write branch 0 (the plain zoo network) as ``<model>_branch0/<model>_branch0_{last,best}.pth``."""
        record = state['history'][-1]
        entry = dict(model=self.model.backbone.state_dict(), epoch=record['epoch'], accuracy=record['val_top1'],
                     best_acc=state['best_acc'], arch=self.model.name)
        os.makedirs(os.path.dirname(files.branch_checkpoint('last')), exist_ok=True)
        atomic_save(entry, files.branch_checkpoint('last'))
        if state['best_epoch'] == record['epoch']:
            atomic_save(entry, files.branch_checkpoint('best'))


class ONERunFiles(RunFiles):
    """The run folder of the shared loop plus ``<model>_branch0/``, whose name lets tools/eval.py and
    train_student.py --path_t read the architecture."""

    def __init__(self, save_root, run_name, arch, model_name):
        super().__init__(save_root, 'online', run_name, arch)
        self.branch_name = model_name

    def branch_checkpoint(self, kind):
        tag = f'{self.branch_name}_branch0'
        return os.path.join(self.folder, tag, f'{tag}_{kind}.pth')
