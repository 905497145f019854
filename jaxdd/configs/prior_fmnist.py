"""A diffusion prior on Fashion-MNIST and the quality of its samples (RESULTS.md, "A diffusion prior on
Fashion-MNIST"): train the prior with the jaxdd command, then score its samples.

    jaxdd prior train --dataset fashion_mnist --ae-steps 500 --steps 2000 --batch-size 128 --width 32 --mults 1,2 --sample-every 250 --checkpoint-every 100 --resume --out runs/priors/fashion_mnist
    python experiments/run.py --config prior_fmnist --config.prior=runs/priors/fashion_mnist --config.out=runs/prior_fmnist
    python experiments/prior_fmnist.py --prior runs/priors/fashion_mnist --out runs/prior_fmnist   # the same, as first run
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "prior_fmnist"
    c.prior = ""  # prior folder (required)
    c.dataset = "fashion_mnist"
    c.out = "runs/prior_fmnist"
    c.per_class = 50
    c.steps = 25  # DDIM steps
    c.guidance = (1.0, 2.0, 4.0)  # classifier-free guidance scales
    c.classifier_model = "convnet-w32"
    c.classifier_train = 10000  # real training images for the classifier
    c.classifier_epochs = 5
    c.seed = 0
    return c
