"""Random-real baselines and full-data accuracy on Fashion-MNIST (RESULTS.md, "Fashion-MNIST baselines").

    python experiments/run.py --config baselines_fmnist --config.ipc=1,10,50 --config.models=2 --config.epochs=100 --config.full_models=1 --config.full_epochs=2 --config.out=runs/baselines
    python experiments/baselines.py --ipc 1 10 50 --models 2 --epochs 100 --full-models 1 --full-epochs 2 --out runs/baselines   # the same, as first run
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "baselines"
    c.dataset = "fashion_mnist"  # the Debian IDX Fashion-MNIST
    c.data_dir = None
    c.ipc = (1, 10, 50)
    c.arch = "convnet"
    c.preset = "dc"
    c.models = 5  # networks per random-real row
    c.epochs = None  # epochs for random-real rows (None: the preset's)
    c.no_full = False  # skip the full-data row
    c.full_models = None  # networks for the full-data row (None: models)
    c.full_epochs = None  # epochs for the full-data row (None: epochs)
    c.train_size = 0  # full-data row on a class-balanced random subset of this many images (0 = all)
    c.seed = 0
    c.out = "runs/baselines"
    return c
