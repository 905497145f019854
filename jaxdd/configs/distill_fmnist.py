"""DC, DSA and DM on Fashion-MNIST with the SDC penalty and on loss-pruned subsets
(RESULTS.md, "Distillation on Fashion-MNIST"; its rows used the shared settings below).

    python experiments/run.py --config distill_fmnist --config.eval_epochs=100 --config.eval_models=2 --config.out=runs/distill_fmnist_s2 --config.results=experiments/results/distill.md
    python experiments/distill_fmnist.py --ipc 10 --methods dm --sdc 0 --keep 1 --dm-iterations 100 --batch-real 64 --eval-epochs 100 --eval-models 2 --out runs/distill_fmnist_s2   # one row
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "distill_fmnist"
    c.dataset = "fashion_mnist"
    c.data_dir = None
    c.ipc = (1, 10)
    c.methods = ("dc", "dsa", "dm")
    c.sdc = (0.0, 0.01, 0.1)  # SDC lambda sweep (0 = plain)
    c.keep = (1.0, 0.6, 0.2)  # loss-pruned fractions kept
    c.iterations = None  # DC/DSA iterations: one per ipc, or one for all (None: 60 at IPC 1, else 10)
    c.dm_iterations = None  # DM iterations: one per ipc, or one for all (None: 100)
    c.batch_real = 64  # real images per class per step (authors: 256)
    c.outer_loop_ipc10 = 10  # DC/DSA outer loop at IPC 10 (authors: 10)
    c.inner_loop_ipc10 = 10  # DC/DSA inner loop at IPC 10 (authors: 50)
    c.eval_epochs = 300  # evaluation epochs (authors: 300 DC, 1000 DSA/DM)
    c.eval_models = 3
    c.score_epochs = 1  # epochs of the classifier whose loss prunes
    c.model = "convnet"
    c.seed = 0
    c.out = "runs/distill_fmnist"
    c.results = "experiments/results/distill.md"
    return c
