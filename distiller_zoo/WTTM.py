"""WTTM: weighted transformed teacher matching, from Zheng and Yang, "Knowledge Distillation Based on Transformed
Teacher Matching" (ICLR 2024), loss as the official ``WTTM`` criterion (zkxufo/TTM, ``distiller_zoo/wttm.py``).

TTM's per-sample KL(p^l / sum(p^l) || softmax(z_s)) (``distiller_zoo/TTM.py``) weighted by the sample's power
sum U = sum(p^l), p = softmax(z_t), which is larger for a smoother teacher distribution; averaged over the batch.

Defaults: the official README publishes no stand-alone WTTM command; its only WTTM command combines CRD with WTTM,
``--distill crd --add wttm --ttm_l 0.2 -b 0.8 -a 4`` (zkxufo/TTM, README.md), which weighs WTTM 4 at l 0.2. Those
are the defaults here: ``-r 1 -a 0 -b 4 --ttm_l 0.2``. TTM's weight 45 at l 0.1 would not do: U is up to
C^(1-l) (about 63 for 100 classes at l 0.1). The paper's appendix A.4 lists per-pair values (Tables 8 and 9);
scripts/run_logit_tables.sh passes them on the command line (vgg13 -> vgg8: --ttm_l 0.1 -b 2.25).
"""
from .TTM import TTM
from .registry import register

__all__ = ['WTTM']


@register('wttm')
class WTTM(TTM):
    """gamma * CE + alpha * KD + beta * WTTM(--ttm_l); defaults from the README's CRD + WTTM command: -r 1 -a 0 -b 4,
    --ttm_l 0.2."""
    default_weights = (1.0, 0.0, 4.0)
    default_power = 0.2
    weighted = True
