"""longnet plugin: STAMP, a stochastic Siamese masked autoencoder conditioned on the time between scans
(Emre et al.).

Trainers: `STAMPTrainer` (pretraining; `--deterministic-mae` = the Siamese-MAE ablation) and
`STAMPProbeTrainer` (frozen encoder + attention-pooling probe of a binary visitsTr.csv column at a horizon).
Modules: config (sizes), timeembed (Δt bins + embedding), patching, model, losses, data, trainer, probe_net,
probe, predict (the `run_prediction` contract), demo (the `longnet_demo` recipe).
"""
