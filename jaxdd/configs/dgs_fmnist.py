"""DGS on Fashion-MNIST: difficulty-guided sampling vs random selection from the same pool vs the best
single distillation run (RESULTS.md, "Difficulty-guided sampling, Fashion-MNIST IPC 1 and 10").

    python experiments/run.py --config dgs_fmnist --config.clf_model=convnet-w32 --config.clf_epochs=8 --config.real_score_size=10000 --config.dm_iterations=60 --config.dm_batch_real=32 --config.eval_models=2 --config.eval_epochs=100 --config.out=runs/dgs_fmnist
    python experiments/dgs_fmnist.py --ipc 1 10 --clf-model convnet-w32 --clf-epochs 8 --clf-train-size 10000 --real-score-size 10000 --dm-iterations 60 --dm-batch-real 32 --eval-models 2 --eval-epochs 100 --random-draws 3 --out runs/dgs_fmnist   # the same, as first run
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "dgs_fmnist"
    c.dataset = "fashion_mnist"
    c.ipc = (1, 10)
    c.pools = ("real", "dm")  # pool kinds: real, dm
    c.pool_factor = 5  # pool size = factor x IPC per class (runs for dm)
    c.dm_iterations = 200
    c.dm_batch_real = 64
    c.clf_train_size = 10000  # real images the classifier trains on (class-stratified; 0 = all)
    c.clf_epochs = 5
    c.clf_model = "convnet"  # difficulty classifier network
    c.real_score_size = 0  # real training images scored for the 'real' target (0 = all)
    c.test_size = 0  # test images used for evaluation (0 = the whole test split)
    c.eval_epochs = 300
    c.eval_models = 3
    c.random_draws = 3
    c.seed = 0
    c.out = "runs/dgs_fmnist"
    return c
