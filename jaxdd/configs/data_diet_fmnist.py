"""Data-diet check (Paul et al., 2021) on Fashion-MNIST: train on the easiest / hardest / random 10, 30,
50 % by EL2N from a few early-trained models (RESULTS.md, "Data diet on Fashion-MNIST").

    python experiments/run.py --config data_diet_fmnist --config.out=experiments/results/data_diet.json
    python experiments/data_diet.py --out experiments/results/data_diet.json     # the same, as first run
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "data_diet"
    c.dataset = "fashion_mnist"
    c.data_dir = None
    c.train_per_class = 300  # class-balanced pool size per class (0 = all)
    c.model = "convnet-w16"
    c.score = "el2n"  # el2n, grand, grand-last, loss, forgetting
    c.score_models = 4
    c.score_epochs = 3  # train the scoring models this long, score at the end
    c.fractions = "0.1,0.3,0.5"
    c.orders = "easy,hard,random"
    c.eval_models = 2
    c.eval_epochs = 20
    c.no_full = False  # skip training on the whole pool
    c.seed = 0
    c.out = "experiments/results/data_diet.json"
    return c
