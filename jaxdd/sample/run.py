"""Command-level runs of the sampling layer: ``run_sample`` (DGS from a pool), ``run_pool`` (build a
pool), ``run_prior_sample`` (a pool sampled from a diffusion prior) and ``run_generate`` (a set
generated from a prior with DAG / ACS guidance). Each takes the settings of its command (a mapping,
``ConfigDict`` or ``argparse.Namespace`` with the fields of ``jaxdd COMMAND --help``) and an output
folder, writes its files there, prints a summary and returns its record.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

POOL_FACTOR = 5  # default pool size: POOL_FACTOR x IPC per class


def _view(ds):
    """Images in [0, 1] for grids (ZCA-whitened data shown through its inverse)."""
    return ds.denormalize if ds.zca is not None else (lambda x: np.clip(x * ds.std + ds.mean, 0, 1))


def _counts(row) -> str:
    return " ".join(str(int(v)) for v in row)


def ensemble_correct(net, variables, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) bool: does the argmax of the logits averaged over the stacked models equal the label."""
    from jaxdd.train import predict_logits

    return np.asarray(predict_logits(net, variables, images)).mean(0).argmax(-1) == np.asarray(labels)


def _local_paths(**paths) -> None:
    """These commands read and write pools, priors and classifiers with local file APIs: a URL given
    for any of them (``flag=path``, underscores for dashes) fails before work starts."""
    from jaxdd.utils.io import require_local

    for flag, value in paths.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            require_local(path, "--" + flag.replace("_", "-"), "this command's pool / prior / classifier I/O")


def run_sample(config, workdir: str | Path | None = None) -> dict:
    """DGS (or random, ``target="random"``) choice of ``ipc`` pool images per class, scored by a
    difficulty classifier loaded from (or trained into) ``classifier`` (default ``OUT/classifier``)."""
    import jax

    from jaxdd.data.registry import load_dataset
    from jaxdd.difficulty.classifier import DEFAULT_EPOCHS, load_or_train_classifier
    from jaxdd.sample.dgs import check_pool_classes, dgs_select, fit_transforms, random_select
    from jaxdd.sample.pool import load_pool
    from jaxdd.sample.targets import load_target
    from jaxdd.sample.transform import bin_index
    from jaxdd.train import TrainConfig
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.images import histogram_figure, save_class_grid, save_figure
    from jaxdd.utils.io import check_output, format_table, save_npz, write_json

    c = as_fields(config)
    _local_paths(out=workdir or c.out, pool=c.pool, classifier=c.classifier, target=c.target)
    out = check_output(workdir or c.out, folder=True)
    record = {"command": "sample", **vars(c)}
    start = time.time()
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    target = "random" if c.target == "random" else load_target(c.target, num_classes=ds.num_classes)
    pool = load_pool(c.pool, ds)
    check_pool_classes(pool.labels, ds.num_classes, c.ipc, ds.class_names)  # before training anything
    k_clf, k_sel = jax.random.split(jax.random.key(c.seed))
    clf_dir = Path(c.classifier) if c.classifier else out / "classifier"
    clf_cfg = TrainConfig(epochs=c.clf_epochs if c.clf_epochs is not None else DEFAULT_EPOCHS)
    clf, trained = load_or_train_classifier(clf_dir, k_clf, ds, model=c.model, config=clf_cfg,
                                            num_models=c.num_models)
    test_acc = float(np.mean(clf.accuracy(ds.x_test, ds.y_test)))
    pool_scores = clf.scores(pool.images, pool.labels, progress=True, desc="score pool")
    real_scores = clf.scores(ds.x_train, ds.y_train, progress=True, desc="score real")
    save_npz(out / "scores.npz", pool=pool_scores, pool_labels=pool.labels, real=real_scores, real_labels=ds.y_train)

    common = dict(real_scores=real_scores, real_labels=ds.y_train, num_classes=ds.num_classes,
                  grid_size=c.grid_size, class_names=ds.class_names)
    if isinstance(target, str) and target == "random":  # the baseline: the transforms only for the report
        indices, dgs = random_select(k_sel, pool.labels, c.ipc, ds.num_classes, ds.class_names), None
        tf = fit_transforms(pool_scores, pool.labels, c.ipc, **common)
        b, t, lo, hi = (np.asarray(getattr(tf.search, f)) for f in ("b", "t", "lo", "hi"))
        pool_t, real_t = tf.pool_transformed, tf.real_transformed
        bins = np.asarray(bin_index(pool_t))
        chosen_counts = np.stack([np.bincount(bins[i], minlength=10) for i in indices])
    else:
        dgs = dgs_select(k_sel, pool_scores, pool.labels, c.ipc, target, **common)
        indices, b, t, lo, hi = dgs.indices, dgs.b, dgs.t, dgs.lo, dgs.hi
        pool_t, real_t, chosen_counts = dgs.pool_transformed, dgs.real_transformed, dgs.chosen_counts

    rows = [{"class": k, "name": ds.class_names[k], "pool": int(pool.class_sizes()[k]), "b": int(b[k]),
             "t": int(t[k]), "lo": f"{float(lo[k]):.3g}", "hi": f"{float(hi[k]):.3g}",
             "target": _counts(dgs.target_counts[k]) if dgs is not None else "-",
             "chosen": _counts(chosen_counts[k]), "filled": int(dgs.filled[k].sum()) if dgs is not None else "-",
             "mean d": f"{float(pool_scores[indices[k]].mean()):.4f}"} for k in range(ds.num_classes)]
    selection = {"target": c.target if isinstance(target, str) else target, "ipc": c.ipc,
                 "classifier": {**clf.meta, "folder": str(clf_dir), "trained_now": trained, "test_acc": test_acc},
                 "per_class": rows, "pool": pool.describe() | {"path": str(c.pool)}}
    distilled = pool.to_distilled(indices.reshape(-1), config={"method": "dgs", **record, "selection": {
        k: v for k, v in selection.items() if k != "pool"}, "pool_sources": list(pool.sources)})
    distilled.save(out)

    save_class_grid(out / "chosen.png", _view(ds)(distilled.images), distilled.labels, ds.num_classes,
                    class_names=ds.class_names)
    fig = histogram_figure({"pool": pool_t, "real": real_t, "chosen": pool_t[indices.reshape(-1)]},
                           bins=np.linspace(0, 1, 11), title=f"{ds.name} IPC {c.ipc}, target {c.target}",
                           xlabel="transformed difficulty T(1 - p(y|x)) (per-class transform)")
    save_figure(out / "difficulty.png", fig)

    elapsed = time.time() - start
    summary = {"config": record, **selection, "seconds": round(elapsed, 1),
               "outputs": ["distilled.npz", "distilled.json", "chosen.png", "difficulty.png", "scores.npz"]}
    write_json(out / "sample.json", summary)
    print(format_table(rows, ["class", "name", "pool", "b", "t", "lo", "hi", "target", "chosen", "filled",
                              "mean d"]))
    print(f"\nclassifier test accuracy {100 * test_acc:.2f}% ({'trained' if trained else 'loaded'}: {clf_dir}); "
          f"mean difficulty pool {pool_scores.mean():.4f}, real {real_scores.mean():.4f}, "
          f"chosen {pool_scores[indices.reshape(-1)].mean():.4f}")
    print(f"wrote {out}/distilled.npz, distilled.json, chosen.png, difficulty.png, scores.npz, sample.json "
          f"({elapsed:.1f} s)")
    return summary


def run_pool(config, workdir: str | Path | None = None) -> dict:
    """A pool from ``runs`` runs of a distillation ``method`` (seeds ``seed ..``), from random real
    images (``method="real"``, ``size`` per class) or from existing sets / pools (``sources``)."""
    import jax

    from jaxdd.data.registry import load_dataset
    from jaxdd.sample.pool import build_distill_pool, concatenate_pools, load_pool, real_pool
    from jaxdd.utils.config import as_fields, parse_settings
    from jaxdd.utils.images import save_class_grid
    from jaxdd.utils.io import check_output, format_table, write_json

    c = as_fields(config)
    _local_paths(out=workdir or c.out, **{"from": c.sources})
    out = Path(workdir or c.out)
    record = {"command": "pool", **vars(c)}
    start = time.time()
    check_output(out, folder=True)
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    if c.sources:
        pool = dataclasses.replace(concatenate_pools([load_pool(s, ds) for s in c.sources]), config=record)
    else:
        if c.ipc is None or c.ipc < 1:
            raise ValueError("--method needs --ipc K (images per class of each run, K >= 1)")
        if c.method == "real":
            pool = real_pool(jax.random.key(c.seed), ds, c.size or POOL_FACTOR * c.ipc, config=record)
        else:
            if c.runs < 1:
                raise ValueError(f"--runs must be >= 1, got {c.runs}")
            overrides = parse_settings(c.settings)
            if c.batch_real is not None:
                overrides["batch_real"] = c.batch_real
            pool = build_distill_pool(c.method, ds, c.ipc, runs=c.runs, seed=c.seed, iterations=c.iterations,
                                      model=c.model, out=out / "runs", config=record, **overrides)
    pool.save(out)
    save_class_grid(out / "pool.png", _view(ds)(pool.images), pool.labels, ds.num_classes, class_names=ds.class_names)
    rows = []
    for r, src in enumerate(pool.sources):
        mine = pool.run == r
        rows.append({"run": r, "kind": src.get("kind", "?"), "method": src.get("method") or "-",
                     "seed": src.get("seed", "-"), "images": int(mine.sum()),
                     "per class": " ".join(str(v) for v in np.bincount(pool.labels[mine], minlength=ds.num_classes))})
    elapsed = time.time() - start
    summary = {"config": record, "pool": pool.describe(), "runs": rows, "seconds": round(elapsed, 1)}
    write_json(out / "pool_build.json", summary)
    print(format_table(rows, ["run", "kind", "method", "seed", "images", "per class"]))
    print(f"\npool of {len(pool)} images ({' '.join(str(v) for v in pool.class_sizes())} per class) for "
          f"{ds.name}; wrote {out}/pool.npz, pool.json, pool.png, pool_build.json ({elapsed:.1f} s)")
    return summary


def run_prior_sample(config, workdir: str | Path | None = None) -> dict:
    """``per_class`` DDIM samples per class of the prior in ``prior``, written as a pool; with
    ``classifier`` (a saved difficulty classifier) also its accuracy on the samples of each class."""
    import jax

    from jaxdd.generative import check_compatible, load_prior, to_dataset_space
    from jaxdd.generative.sampling import generate
    from jaxdd.sample.pool import make_pool
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.images import save_class_grid
    from jaxdd.utils.io import check_output, format_table, write_json

    c = as_fields(config)
    _local_paths(out=workdir or c.out, prior=c.prior, classifier=c.classifier)
    if c.per_class < 1:
        raise ValueError(f"--per-class must be >= 1, got {c.per_class}")
    out = check_output(workdir or c.out, folder=True)
    prior, params, meta = load_prior(c.prior)
    dataset_name = meta.get("dataset", {}).get("name", Path(c.prior).name)
    class_names = meta.get("dataset", {}).get("class_names") or [str(k) for k in range(prior.num_classes)]
    mean, std = np.asarray(prior.pixel_mean, np.float32), np.asarray(prior.pixel_std, np.float32)
    ds = None
    if c.dataset:
        from jaxdd.data import load_dataset

        ds = load_dataset(c.dataset, data_dir=c.data_dir)
        check_compatible(prior, ds, where=f"prior {c.prior}")
        dataset_name, class_names, mean, std = ds.name, list(ds.class_names), ds.mean, ds.std
    labels = np.repeat(np.arange(prior.num_classes), c.per_class)
    t0 = time.time()
    images = generate(prior, params, labels, jax.random.key(c.seed), steps=c.steps, cfg_scale=c.cfg,
                      batch_size=c.batch_size, progress=not c.no_progress)
    seconds = time.time() - t0
    images = np.asarray(to_dataset_space(prior, images, mean, std), np.float32)
    record = {"command": "jaxdd prior sample", "prior": str(c.prior), "per_class": c.per_class, "steps": c.steps,
              "guidance": c.cfg, "seed": c.seed, "dataset": c.dataset, "seconds": round(seconds, 2)}
    pool = make_pool(images, labels, prior.num_classes, dataset_name, mean, std, seed=c.seed,
                     source_index=np.arange(len(labels)),
                     sources=[{"kind": "prior", "prior": str(c.prior), "steps": c.steps, "guidance": c.cfg,
                               "seed": c.seed}], config=record)
    pool.save(out)
    save_class_grid(out / "samples.png", pool.denormalized(), labels, prior.num_classes, min(c.per_class, 10),
                    class_names=class_names)
    rows = [{"class": k, "name": class_names[k], "samples": int(c.per_class)} for k in range(prior.num_classes)]
    summary = {"config": record, "per_class": rows}
    if c.classifier:
        from jaxdd.difficulty.classifier import DifficultyClassifier

        clf = DifficultyClassifier.load(c.classifier, ds)
        correct = ensemble_correct(clf.net, clf.variables, images, labels)
        for r in rows:
            r["classifier_acc"] = float(np.mean(correct[labels == r["class"]]))
        summary["classifier"] = {"path": c.classifier, "accuracy": float(np.mean(correct))}
    print(format_table(rows))
    if "classifier" in summary:
        print(f"real-data classifier accuracy on the samples: {100 * summary['classifier']['accuracy']:.1f} %")
    write_json(out / "sample.json", summary)
    print(f"{len(labels)} samples in {seconds:.1f} s; wrote {out}/pool.npz, pool.json, samples.png, sample.json")
    return summary


def run_generate(config, workdir: str | Path | None = None) -> dict:
    """A set sampled from the prior in ``prior`` with ``guidance`` none / dag / acs
    (:func:`jaxdd.sample.guided.generate_set`), printed as a per-class table."""
    from jaxdd.data import load_dataset
    from jaxdd.generative import load_prior
    from jaxdd.sample.guided import GenerateConfig, generate_set
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.io import check_output, format_table

    c = as_fields(config)
    _local_paths(out=workdir or c.out, prior=c.prior, classifier=c.classifier)
    out = check_output(workdir or c.out, folder=True)
    gen = GenerateConfig(ipc=c.ipc, guidance=c.guidance, target=c.target,
                         curricula=c.curricula or (2 if c.guidance == "acs" else 1), scale=c.scale, window=c.window,
                         pool_factor=c.pool_factor, steps=c.steps, cfg_scale=c.cfg, deviation=c.deviation,
                         disc_epochs=c.disc_epochs, disc_model=c.disc_model, batch_size=c.batch_size, seed=c.seed)
    prior, params, meta = load_prior(c.prior)
    name = c.dataset or meta.get("dataset", {}).get("name")
    if not name:
        raise ValueError(f"{c.prior}/prior.json names no dataset: pass --dataset NAME")
    ds = load_dataset(name, data_dir=c.data_dir)
    summary = generate_set(prior, params, ds, gen, out, classifier_dir=c.classifier, classifier_model=c.model,
                           classifier_epochs=c.clf_epochs, prior_path=str(c.prior), dataset_id=name, resume=c.resume,
                           progress=not c.no_progress)
    rows = [{**r, "target_mean_d": f"{r['target_mean_d']:.4f}", "achieved_mean_d": f"{r['achieved_mean_d']:.4f}",
             "kl_target_achieved": f"{r['kl_target_achieved']:.3f}"} for r in summary["per_class"]]
    print(format_table(rows))
    print(f"\n{summary['generated']} images generated in {summary['seconds_generate']:.1f} s "
          f"({summary['seconds_per_image']:.3f} s/image); mean KL(target || achieved) {summary['kl_mean']:.3f}; "
          f"within-class diversity {summary['diversity']:.3f}, coverage of the real test set "
          f"{100 * summary['coverage']:.1f} % (classifier features)")
    print(f"wrote {out}/distilled.npz, distilled.json, pool/, samples.png, difficulty.png, generate.json")
    return summary
