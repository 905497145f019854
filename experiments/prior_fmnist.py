"""Sample quality of a diffusion prior trained on Fashion-MNIST (issue 7, measured part 1).

Train the prior first (wall-clock time recorded in its prior.json), e.g.::

    jaxdd prior train --dataset fashion_mnist --ae-steps 800 --steps 3000 --batch-size 128 \
        --width 32 --mults 1,2 --sample-every 500 --out runs/priors/fashion_mnist

then::

    python experiments/prior_fmnist.py --prior runs/priors/fashion_mnist --out runs/prior_fmnist
    python experiments/run.py --config prior_fmnist --config.prior=runs/priors/fashion_mnist   # the same

This trains a real-data classifier (``jaxdd.difficulty.classifier.train_classifier``, the shared SGD
trainer) on a subset of the real training set, reports its accuracy on the real test set, then
draws ``--per-class`` DDIM samples per class at each guidance scale and reports the classifier's
accuracy on them (a proxy of sample quality: a sample counts when the classifier recognises its
class), per class and overall, with the sampling time. Writes ``results.json``, one PNG grid per
guidance scale and prints the tables.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxdd.data import load_dataset
from jaxdd.generative import check_compatible, load_prior, to_dataset_space
from jaxdd.generative.prior import num_params
from jaxdd.generative.sampling import generate
from jaxdd.difficulty.classifier import train_classifier
from jaxdd.train import TrainConfig, predict_logits
from jaxdd.utils.images import save_class_grid
from jaxdd.utils.io import format_table, write_json


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/prior_fmnist.py``)."""
    from run import as_list

    if not args.prior:
        raise SystemExit("prior_fmnist needs the diffusion prior: --config.prior=runs/priors/fashion_mnist "
                         "(or --prior)")
    args.guidance = as_list(args.guidance)
    out = Path(args.out)

    ds = load_dataset(args.dataset, progress=False)
    prior, params, meta = load_prior(args.prior)
    check_compatible(prior, ds, where=f"prior {args.prior}")
    key = jax.random.key(args.seed)
    k_sub, k_clf, k_sample = jax.random.split(key, 3)

    t0 = time.time()
    sub = ds.subset(np.sort(np.asarray(jax.random.permutation(k_sub, len(ds.y_train))[:args.classifier_train])))
    clf = train_classifier(k_clf, sub, args.classifier_model,
                           TrainConfig(epochs=args.classifier_epochs, batch_size=128), progress=True)
    clf_seconds = time.time() - t0
    test_acc = float(np.mean(clf.accuracy(ds.x_test, ds.y_test)))
    print(f"real-data classifier {args.classifier_model} ({len(sub.y_train)} images, {args.classifier_epochs} epochs, "
          f"{clf_seconds:.0f} s): {100 * test_acc:.2f} % on the real test set")

    labels = np.repeat(np.arange(ds.num_classes), args.per_class)
    rows, per_class = [], {}
    for w in args.guidance:
        t0 = time.time()
        imgs = generate(prior, params, labels, k_sample, steps=args.steps, cfg_scale=w, batch_size=100,
                        progress=True)
        seconds = time.time() - t0
        imgs = np.asarray(to_dataset_space(prior, imgs, ds.mean, ds.std))
        pred = np.asarray(predict_logits(clf.net, clf.variables, imgs)).mean(0).argmax(-1)
        acc = pred == labels
        per_class[w] = [float(acc[labels == c].mean()) for c in range(ds.num_classes)]
        save_class_grid(out / f"samples_w{w:g}.png", ds.denormalize(imgs), labels, ds.num_classes, 10)
        rows.append({"guidance": w, "ddim_steps": args.steps, "samples": len(labels),
                     "classifier_acc_on_samples": round(100 * float(acc.mean()), 2),
                     "real_test_acc": round(100 * test_acc, 2), "sample_seconds": round(seconds, 1)})
    print(format_table(rows))
    class_rows = [{"class": c, "name": ds.class_names[c], **{f"w={w:g}": round(100 * per_class[w][c], 1)
                                                              for w in args.guidance}}
                  for c in range(ds.num_classes)]
    print(format_table(class_rows))
    train_seconds = max((h["seconds"] for h in meta.get("history", [])), default=None)
    write_json(out / "results.json", {
        "config": vars(args), "prior": {"path": args.prior, "config": prior.config(), "num_params": num_params(params),
                                        "train_seconds": train_seconds, "train_config": meta.get("train_config")},
        "classifier": {"model": args.classifier_model, "train_images": len(sub.y_train),
                       "epochs": args.classifier_epochs, "seconds": clf_seconds, "real_test_acc": test_acc},
        "rows": rows, "per_class": class_rows})
    print(f"wrote {out}/results.json and samples_w*.png")
    return 0


if __name__ == "__main__":
    import sys

    from run import legacy_main

    sys.exit(legacy_main("prior_fmnist"))
