"""Online distillation methods: peers trained together from scratch (L-MCL, MCL; their losses and modules).

``engine/online.py`` wires them into the shared training loop for train_online_mcl.py.
"""
