"""Authors' hyper-parameters of MTT and DATM per dataset and IPC (the rows a config starts from).

Every row says where it comes from:

* ``spec``: the MTT / DATM papers' CIFAR-10 settings (Cazenavette et al., CVPR 2022; Guo et al., ICLR 2024);
* ``mtt-readme``: the command line in the MTT repository's README (CIFAR-100, IPC 1);
* ``ours``: no published row exists (MTT and DATM did not report Fashion-MNIST); our choice for
  a 2-core CPU budget, documented in ``experiments/results/mtt.md``.

Fields: ``syn_steps`` N, ``expert_epochs`` M, ``max_start_epoch`` T⁺, ``lr_img``, ``lr_lr``,
``lr_teacher`` (initial learnable step size), ``zca``, and for DATM ``min_start_epoch``,
``current_max_start_epoch``, ``expansion_end_epoch``, ``lr_y``, ``iterations``. A field missing
from a row falls back to :data:`COMMON`. The lookup takes the row of the nearest IPC of the dataset
(ties: the smaller IPC); an unknown dataset falls back to CIFAR-10's rows (say so in the outputs:
the resolved values are recorded in every run's config).
"""

from __future__ import annotations

COMMON = {"lr_teacher": 0.01, "lr_lr": 1e-5, "min_start_epoch": 0}

# (method, dataset, ipc) -> (source, fields)
TABLE: dict[tuple[str, str, int], tuple[str, dict]] = {
    ("mtt", "cifar10", 1): ("spec", dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=1000.0,
                                         zca=True)),
    ("mtt", "cifar10", 10): ("spec", dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=1e5, zca=True)),
    ("mtt", "cifar10", 50): ("spec", dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0)),
    ("mtt", "cifar100", 1): ("mtt-readme", dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0,
                                                lr_lr=1e-5, lr_teacher=0.01, zca=True)),
    ("mtt", "fashion_mnist", 1): ("ours", dict(syn_steps=20, expert_epochs=2, max_start_epoch=2, lr_img=100.0,
                                               lr_lr=1e-6)),
    ("mtt", "fashion_mnist", 10): ("ours", dict(syn_steps=20, expert_epochs=2, max_start_epoch=4, lr_img=100.0,
                                                lr_lr=1e-5)),
    ("datm", "cifar10", 10): ("spec", dict(syn_steps=80, expert_epochs=2, lr_img=100.0, iterations=10000, lr_y=2.0,
                                           max_start_epoch=20, current_max_start_epoch=10,
                                           expansion_end_epoch=5000, zca=True)),
    ("datm", "fashion_mnist", 1): ("ours", dict(syn_steps=20, expert_epochs=2, lr_img=100.0, lr_lr=1e-6, lr_y=2.0,
                                                min_start_epoch=0, current_max_start_epoch=1, max_start_epoch=3,
                                                expansion_end_epoch=200)),
    ("datm", "fashion_mnist", 10): ("ours", dict(syn_steps=20, expert_epochs=2, lr_img=100.0, lr_lr=1e-5, lr_y=2.0,
                                                 min_start_epoch=0, current_max_start_epoch=2, max_start_epoch=4,
                                                 expansion_end_epoch=200)),
}
# DATM rows marked ``spec`` fix only syn_steps, expert_epochs, lr_img, iterations and lr_y; the window
# (current_max_start_epoch 10 -> max_start_epoch 20 over expansion_end_epoch) is our choice (open).

ALIASES = {"fmnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "embedded": "fashion_mnist",
           "fashion_mnist_small": "fashion_mnist", "cifar_10": "cifar10", "cifar_100": "cifar100"}
FALLBACK = "cifar10"


def canonical(dataset: str | None) -> str:
    name = (dataset or FALLBACK).strip().lower()
    base = name.split("-")[0]  # pruned subsets are named "<dataset>-easy0.6" etc.
    return ALIASES.get(base, base)


def authors_defaults(method: str, dataset: str | None, ipc: int) -> tuple[dict, str]:
    """``(fields, source)`` for ``method`` ("mtt" / "datm") on ``dataset`` at ``ipc``: the row of the
    nearest IPC (ties: the smaller), merged over :data:`COMMON`; ``source`` names the row used."""
    if method not in ("mtt", "datm"):
        raise ValueError(f"trajectory configs exist for 'mtt' and 'datm', not {method!r}")
    name = canonical(dataset)
    rows = {i: r for (m, d, i), r in TABLE.items() if m == method and d == name}
    fallback = ""
    if not rows:
        fallback = f" (no row for {name!r}: {FALLBACK} used)"
        name = FALLBACK
        rows = {i: r for (m, d, i), r in TABLE.items() if m == method and d == name}
    best = min(rows, key=lambda i: (abs(i - ipc), i))
    source, fields = rows[best]
    return {**COMMON, **fields}, f"{method} {name} ipc {best} ({source}){fallback}"
