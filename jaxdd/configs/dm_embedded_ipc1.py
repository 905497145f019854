"""The README's main command: DM on the embedded Fashion-MNIST subset, 1 image per class, the
quick budget (200 iterations, real batch 64, final evaluation 3 networks x 300 epochs). RESULTS.md's
"The README's main command" section.

    jaxdd distill --config dm_embedded_ipc1 --out runs/readme_default     # = jaxdd distill --out runs/readme_default
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "dm"
    c.dataset = "embedded"
    c.model = "convnet"
    c.ipc = 1
    c.budget = "quick"
    return c
