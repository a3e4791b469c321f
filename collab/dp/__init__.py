"""Differential privacy: DP-SGD training, privacy ledgers, and noise on inference outputs (:mod:`collab.dp.output`)."""
