"""LD3M vs pixel-space DM/DC and random real images on Fashion-MNIST (RESULTS.md, "LD3M vs pixel-space
DM/DC on Fashion-MNIST"); needs the prior of prior_fmnist's first step.

    python experiments/run.py --config ld3m_fmnist --config.prior=runs/priors/fashion_mnist --config.out=runs/ld3m_fmnist --config.eval_epochs=100 --config.eval_models=2
    python experiments/ld3m_fmnist.py --prior runs/priors/fashion_mnist --out runs/ld3m_fmnist --eval-epochs 100 --eval-models 2   # the same, as first run
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "ld3m_fmnist"
    c.prior = ""  # diffusion prior folder (required)
    c.dataset = "fashion_mnist"
    c.out = "runs/ld3m_fmnist"
    c.ipc = (1, 10)
    c.model = "convnet"
    c.dm_iterations = 100
    c.dc_iterations = 20
    c.dc_loops = "1,1;2,5"  # outer,inner per IPC (';'-separated, in ipc order)
    c.batch_real = 64
    c.num_steps = 10  # LD3M DDIM steps of the main runs
    c.ddim_steps = (2, 5, 10, 20)
    c.steps_ipc = 1
    c.lr_img = (0.03, 0.1)  # extra Adam lrs of the latents for LD3M-DM at IPC steps_ipc (main run: 0.01)
    c.eval_epochs = 300
    c.eval_models = 3
    c.cross_archs = ("lenet", "mlp")  # also evaluate every finished set on these networks
    c.only = None  # run only these run names (None: all)
    c.seed = 0
    return c
