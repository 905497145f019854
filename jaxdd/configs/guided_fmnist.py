"""Guided generation on Fashion-MNIST: unguided prior samples, DAG, ACS and DGS on generated pools
against random real images and DM, at IPC 1, 10 and 50, on ConvNet, LeNet, MLP and ResNet-18
(RESULTS.md, "Guided generation on Fashion-MNIST").

    python experiments/run.py --config guided_fmnist --config.budget_s=420 --config.out=OUT --config.tar=true
    OUT=DIR bash benchmarks/guided_gpu.sh 420      # the same on an accelerator, resumable (its archives)
    python experiments/run.py --config guided_fmnist --config.tiny=true --config.out=/tmp/guided   # CPU smoke test
    python experiments/guided_fmnist.py --tiny --out /tmp/guided                                  # the same, as first run

Empty ``ipc``/``archs`` take the mode's default (1, 10, 50 and all four; 2 and convnet, mlp with
``tiny``); ``None`` numbers keep the GPU (or tiny) defaults of experiments/guided_fmnist.py.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "guided_fmnist"
    c.dataset = ""  # "" : fashion_mnist (embedded with tiny)
    c.data_dir = ""  # "" : jaxdd's default data folder
    c.ipc = ()  # () : 1, 10, 50 (2 with tiny)
    c.archs = ()  # () : convnet, lenet, mlp, resnet18 (convnet, mlp with tiny)
    c.folder = "runs/guided_fmnist"  # cached stages: prior, classifier, sets, evaluations
    c.out = ""  # "" : $OUT, else benchmarks/results
    c.budget_s = 0.0  # wall-clock budget in seconds (0: none); no job starts that would end later
    c.deadline = 0.0  # the same as a UNIX time (0: none; wins over budget_s)
    c.margin_s = 15.0  # seconds kept free before the deadline
    c.tar = False  # pack the folder and the sets into OUT/guided_gpu.tar.gz, OUT/guided_sets.tar.gz
    c.restore = ()  # archives unpacked when the folder does not exist
    c.tiny = False  # CPU smoke test: embedded data, tiny prior and networks, a few steps
    c.eval_epochs = 0  # 0 : the mode's default (100 GPU)
    c.eval_models = 0  # 0 : the mode's default (3)
    c.dm_iterations = 0  # 0 : the mode's default (500 GPU)
    c.disc_epochs = 0  # 0 : the mode's default (ACS discriminator, 150 GPU)
    c.prior_steps = 0  # 0 : the mode's default (6000 GPU)
    c.set = ()  # KEY=VALUE overrides of the mode's settings (JSON values): prior.width=32, ddim_steps=25
    c.only = ""  # comma list of set names to run (e.g. unguided_cfg2,dag_real); "" : all
    c.seed = 0
    return c
