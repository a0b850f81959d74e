"""Contrastive Representation Distillation's loss and memory, as RepDistiller lays them out
(``from crd.criterion import CRDLoss``); the ``crd`` method that uses them is distiller_zoo/CRD.py."""
from .criterion import CRDLoss, ContrastLoss, Embed, Normalize
from .memory import ContrastMemory

__all__ = ['CRDLoss', 'ContrastLoss', 'ContrastMemory', 'Embed', 'Normalize']
