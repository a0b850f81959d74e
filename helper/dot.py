"""DOT, the Distillation-Oriented Trainer (Zhao et al., ICCV 2023): SGD whose momentum is split in two,
one buffer for the gradient of the task (cross-entropy) loss and one for the gradient of the distillation
terms, with more momentum on the distillation side (momentum + delta) and less on the task side
(momentum - delta). Written after the update of megvii-research/mdistiller's ``mdistiller/engine/dot.py``
and the ``DOT`` trainer of ``mdistiller/engine/trainer.py``, which per step backpropagates the KD loss first
(``step_kd`` keeps its gradients), then the CE loss (``step`` applies both).

What the official update does, and this one with it (one parameter group, no dampening, no Nesterov):

* a parameter with a CE gradient ``g``: ``d = g + wd * p``; its CE buffer starts as ``d`` and is then
  ``m_ce * buf + d`` when the parameter also has a KD gradient, ``(m_ce + m_kd) / 2 * buf + d`` (plain SGD
  momentum) when it has none; ``p -= lr * buf``. With ``m_ce == 0`` there is no buffer and ``d`` is applied.
* a parameter with a KD gradient ``k``: its KD buffer starts as ``k`` and is then ``m_kd * buf + k`` when the
  parameter also has a CE gradient; when it has none (a projector only the distillation terms reach),
  ``(m_ce + m_kd) / 2 * buf + k + wd * p``. Then ``p -= lr * buf``, after the CE update.

So weight decay joins the CE gradient only, except on parameters that no CE gradient reaches, where it
joins the KD gradient from the second step on (the first step's KD buffer is the bare gradient), as in
the official code. Both buffers are per-parameter optimiser state (``momentum_buffer``,
``momentum_kd_buffer``), so they are in ``state_dict()`` and an exact resume restores them.
"""
import torch


class DistillationOrientedTrainer(torch.optim.Optimizer):
    """Per step: ``zero_grad``, backward of the KD terms, ``step_kd()``, ``zero_grad``, backward of the CE
    term, ``step()``. ``momentum`` is the task (CE) momentum, ``momentum_kd`` the distillation one."""

    separates_kd = True  # the training loop runs the two backward passes (engine/loop.py)

    def __init__(self, params, lr, momentum, momentum_kd, weight_decay=0.0):
        if lr < 0 or momentum < 0 or momentum_kd < 0 or weight_decay < 0:
            raise ValueError("DOT's lr, momenta and weight decay cannot be negative")
        super().__init__(params, dict(lr=lr, momentum=momentum, momentum_kd=momentum_kd, weight_decay=weight_decay))
        if len(self.param_groups) != 1:
            raise ValueError("DOT is written for one parameter group, as the official trainer")
        self._kd_grads = None  # [(param, KD gradient)] between step_kd and step

    @torch.no_grad()
    def step_kd(self):
        """Keep the gradients now in ``.grad`` (the distillation terms') for the next ``step``."""
        self._kd_grads = [(p, p.grad) for p in self.param_groups[0]['params'] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure=None):
        """Apply the CE gradients now in ``.grad`` and the KD gradients kept by ``step_kd``."""
        if closure is not None:
            raise ValueError("DOT takes no closure: call step_kd after the KD backward, step after the CE one")
        group = self.param_groups[0]
        lr, wd = group['lr'], group['weight_decay']
        m_ce, m_kd = group['momentum'], group['momentum_kd']
        m_mean = (m_ce + m_kd) / 2.0
        kd = self._kd_grads or []
        self._kd_grads = None
        kd_ids = {id(p) for p, _ in kd}
        ce_params = [p for p in group['params'] if p.grad is not None]
        ce_ids = {id(p) for p in ce_params}
        for p in ce_params:
            d = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            if m_ce != 0:
                state = self.state[p]
                buf = state.get('momentum_buffer')
                if buf is None:
                    buf = state['momentum_buffer'] = torch.clone(d).detach()
                else:
                    buf.mul_(m_ce if id(p) in kd_ids else m_mean).add_(d)
                d = buf
            p.add_(d, alpha=-lr)
        for p, grad in kd:
            state = self.state[p]
            buf = state.get('momentum_kd_buffer')
            if buf is None:
                buf = state['momentum_kd_buffer'] = torch.clone(grad).detach()
            elif id(p) in ce_ids:
                buf.mul_(m_kd).add_(grad)
            else:
                buf.mul_(m_mean).add_(grad if wd == 0 else grad.add(p, alpha=wd))
            p.add_(buf, alpha=-lr)
        return None
