"""DM on Fashion-MNIST at IPC 10 with the CPU budget of RESULTS.md's "Distillation on Fashion-MNIST"
(its row DM / IPC 10 / SDC 0 / keep 100 %: 100 iterations, real batch 64, evaluation 2 networks x
100 epochs under the dc-dsa preset).

    jaxdd distill --config dm_fmnist_ipc10 --out runs/dm_fmnist_ipc10
    jaxdd distill --config dm_fmnist_ipc10 --config.ipc=50 --out runs/dm_fmnist_ipc50   # one field changed
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "dm"
    c.dataset = "fashion_mnist"
    c.model = "convnet"
    c.ipc = 10
    c.iterations = 100
    c.batch_real = 64
    c.sdc = 0.0
    c.checkpoint_every = 25
    c.eval_every = 0
    c.eval_epochs = 100
    c.eval_models = 2
    c.seed = 0
    return c
