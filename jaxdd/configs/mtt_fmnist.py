"""MTT and DATM (with and without SDC) on Fashion-MNIST with a CPU budget, against the random-real
baseline and DM (RESULTS.md, "MTT and DATM on Fashion-MNIST").

    python experiments/run.py --config mtt_fmnist --config.buffer=runs/mtt/buffer_fmnist_w32 --config.out=runs/mtt
    python experiments/mtt_fmnist.py --buffer runs/mtt/buffer_fmnist_w32 --out runs/mtt   # the same, as first run
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "mtt_fmnist"
    c.dataset = "fashion_mnist"
    c.arch = "convnet-w32"  # experts, students and evaluation (a 2-core CPU cannot afford width 128)
    c.train_size = 5000  # class-balanced random training subset
    c.experts = 5
    c.epochs = 5  # epochs per expert
    c.ipc = (1, 10)
    c.methods = ("mtt", "datm")
    c.compare = ("dm",)  # matching methods run on the same subset and network (empty: none)
    c.sdc = 0.02  # SDC weight of the +SDC runs (0 skips them)
    c.iterations_ipc1 = 100
    c.iterations_ipc10 = 50
    c.syn_steps = None  # student steps (None: the table's, 20)
    c.syn_steps_ipc10 = 10  # student steps at IPC >= 10 (0: as syn_steps)
    c.batch_syn_ipc10 = 50  # student batch at IPC 10 (0: all 100)
    c.memory = "unroll"  # memory mode (same gradient; unroll is fastest on a CPU)
    c.eval_epochs = 300
    c.eval_models = 3
    c.seed = 0
    c.out = "runs/mtt"
    c.buffer = None  # expert buffer folder (None: OUT/buffer; resumed if it exists)
    return c
