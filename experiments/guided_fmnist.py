"""Guided generation on Fashion-MNIST: unguided prior samples, DAG, ACS and DGS on generated pools
against random real images and DM, at IPC 1, 10 and 50, on ConvNet, LeNet, MLP and ResNet-18.

    python experiments/run.py --config guided_fmnist [--config.ipc=1,10,50] [--config.archs=convnet,mlp]
        [--config.folder=runs/guided_fmnist] [--config.out=DIR] [--config.budget_s=S] [--config.tiny=true]
    python experiments/guided_fmnist.py [--ipc 1 10 50] [--budget-s S] [--tiny] ...   # the same, old flags

(fields and defaults: ``jaxdd/configs/guided_fmnist.py``)

(``benchmarks/guided_gpu.sh`` runs it on an accelerator under a wall-clock budget.) Stages, each
cached in ``--folder`` so that a second call continues where the first stopped:

1. a diffusion prior trained here (``jaxdd.generative.train_prior``; larger than the width-32 prior
   of the earlier measurements: ``--prior-width``, ``--prior-depth``, more steps), in chunks of
   ``--prior-chunk`` steps with a checkpoint after each;
2. the DGS difficulty classifier (ConvNet on the real training split) and its scores of every real
   training image;
3. per IPC, the sets: unguided samples at CFG 1, 2 and 4; DAG with the real-histogram target and
   the ``hill`` preset; ACS with K curricula (``--acs-k``); DGS (real target) on an unguided and
   on a DAG pool of 5 x IPC per class; random real images; DM (``--dm-iterations``). Every
   generated set goes through :func:`jaxdd.sample.guided.generate_set` (``jaxdd generate``);
4. evaluation of every set under one preset (``dc``, ``--eval-epochs``, ``--eval-models`` fresh
   networks, the same key for every set of an IPC and architecture: a paired comparison), first on
   ConvNet, then on the other architectures. The unguided row of the other architectures is the
   CFG with the best ConvNet accuracy.

Per set also (:mod:`jaxdd.sample.metrics`): KL between the real difficulty histogram and the set's
(``kl_real``; DAG/DGS sets also against their own target, ``kl_target``), the classifier's accuracy
on the set (how often it recognises the class: the prior's quality proxy), within-class diversity
and coverage of the real test set in the classifier's feature space, seconds per generated image
(compilation included: the first set of a kind compiles its sampler).

Work is a list of jobs run in order; a job starts only when its estimated time (the last job of the
same kind, else a default) fits before the deadline, so the run ends on time with everything done
so far saved. ``OUT/guided_gpu.json`` and ``.md`` hold the results (rewritten after every job);
``--tar`` packs the folder into ``OUT/guided_gpu.tar.gz`` and ``OUT/guided_sets.tar.gz``
(:func:`pack`), which ``--restore`` unpacks on a fresh machine. The sets travel as float16: a
rerun evaluates the architectures still missing on the float16-rounded images (relative error
~5e-4), the finished rows keep their float32 evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import jax
import numpy as np

# GPU defaults (one H200, ~420 s with compilation) and the CPU smoke test (--tiny: embedded data)
FULL = {"prior": {"width": 48, "depth": 2, "ae_width": 32, "ae_steps": 1500, "steps": 6000, "batch": 256,
                  "chunk": 1500},
        "ddim_steps": 50, "gen_batch": 250, "clf_model": "convnet", "clf_epochs": 5, "dm_iterations": 500,
        "dm_batch_real": 256, "disc_epochs": 150, "eval_epochs": 100, "eval_models": 3, "max_real": 2000}
TINY = {"prior": {"width": 8, "depth": 1, "ae_width": 8, "ae_steps": 4, "steps": 6, "batch": 16, "chunk": 4},
        "ddim_steps": 5, "gen_batch": 20, "clf_model": "convnet-d2-w16", "clf_epochs": 1, "dm_iterations": 2,
        "dm_batch_real": 8, "disc_epochs": 2, "eval_epochs": 2, "eval_models": 3, "max_real": 200}
TINY_ARCHS = {"convnet": "convnet-d2-w16", "lenet": "lenet", "mlp": "mlp-w32", "resnet18": "resnet18"}
ACS_K = {10: (2, 5), 50: (5, 10), 2: (2,)}  # IPC 2: the smoke test's
CFGS = (1.0, 2.0, 4.0)
GUIDED_CFG = 2.0  # the CFG of every guided / pool / ACS row (the prior's default)
POOL_FACTOR = 5
# first-of-kind estimates (s, compilation included) before a job of the kind has been timed
DEFAULT_S = {"prior": 40.0, "classifier": 20.0, "gen": 40.0, "acs": 90.0, "dm": 60.0, "random": 2.0, "eval": 20.0,
             "eval_resnet18": 45.0}


def default_estimate(kind: str) -> float:
    """The longest DEFAULT_S entry whose name starts ``kind`` (``eval_resnet18_50`` -> ``eval_resnet18``)."""
    keys = [k for k in DEFAULT_S if kind == k or kind.startswith(k + "_")]
    return DEFAULT_S[max(keys, key=len)] if keys else 30.0


def settings(args):
    """The config's fields with the mode's defaults resolved: empty / zero means "the default"."""
    args.ipc = list(args.ipc) or ([2] if args.tiny else [1, 10, 50])
    args.archs = list(args.archs) or (["convnet", "mlp"] if args.tiny else ["convnet", "lenet", "mlp", "resnet18"])
    args.out = args.out or os.environ.get("OUT") or "benchmarks/results"
    for field in ("dataset", "data_dir", "only", "budget_s", "deadline", "eval_epochs", "eval_models", "dm_iterations",
                  "disc_epochs", "prior_steps"):
        setattr(args, field, getattr(args, field) or None)
    args.restore = list(args.restore) or None
    args.set = list(args.set)
    return args


class Run:
    """Job bookkeeping: deadline, per-kind timings, the results record."""

    def __init__(self, args, cfg, folder: Path, out: Path):
        self.args, self.cfg, self.folder, self.out = args, cfg, folder, out
        start = time.time()
        self.deadline = args.deadline or (start + args.budget_s if args.budget_s else float("inf"))
        self.timing: dict[str, float] = {}
        self.status_path = folder / "status.json"
        saved = json.loads(self.status_path.read_text()) if self.status_path.is_file() else {}
        self.record = {"sets": saved.get("sets", {}), "evals": saved.get("evals", {}), "prior": saved.get("prior", {}),
                       "classifier": saved.get("classifier", {}), "jobs": [], "calls": saved.get("calls", []) + [
                           {"start": round(start), "backend": jax.default_backend(),
                            "devices": [str(d) for d in jax.devices()]}]}

    def left(self) -> float:
        return self.deadline - time.time() - self.args.margin_s

    def estimate(self, kind: str, default: float | None = None) -> float:
        """The last time of a ``kind`` job (smoothed), else ``default`` / :func:`default_estimate`."""
        guess = default_estimate(kind) if default is None else default
        return self.timing.get(kind, guess / (100.0 if self.args.tiny else 1.0))

    def job(self, name: str, kind: str, fn, default: float | None = None):
        """Run ``fn()`` unless its estimate does not fit the budget; record its time under ``kind``."""
        if self.left() <= 0 or self.left() < 1.1 * self.estimate(kind, default):
            self.record["jobs"].append({"job": name, "state": "skipped (budget)"})
            print(f"[guided] skip {name}: {self.left():.0f} s left, ~{self.estimate(kind, default):.0f} s needed",
                  flush=True)
            return None
        t = time.time()
        result = fn()
        dt = time.time() - t
        self.timing[kind] = dt if kind not in self.timing else max(0.5 * self.timing[kind] + 0.5 * dt, dt * 0.8)
        self.record["jobs"].append({"job": name, "state": "done", "seconds": round(dt, 1)})
        print(f"[guided] {name}: {dt:.1f} s, {self.left():.0f} s left", flush=True)
        return result


def mean_kl(weights, scores, labels, lo, hi) -> float:
    """Mean over classes of KL(weights_c || histogram of the class's scores), transformed by DGS's
    per-class ``(lo, hi)``."""
    from jaxdd.sample.metrics import histogram_kl
    from jaxdd.sample.transform import log_transform

    t = np.asarray(log_transform(scores, lo[labels], hi[labels]))
    return float(np.mean(histogram_kl(weights, t, labels)))


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/guided_fmnist.py``)."""
    from jaxdd.data import load_dataset
    from jaxdd.data.sampler import random_real
    from jaxdd.evaluate import evaluate_set
    from jaxdd.generative import PriorTrainConfig, SmallPrior, load_prior, train_prior
    from jaxdd.difficulty.classifier import load_or_train_classifier
    from jaxdd.sample.dgs import fit_transforms
    from jaxdd.sample.guided import GenerateConfig, generate_set, target_weights
    from jaxdd.sample.metrics import set_metrics
    from jaxdd.train import TrainConfig
    from jaxdd.utils.images import save_class_grid
    from jaxdd.utils.io import write_json

    args = settings(args)
    cfg = json.loads(json.dumps(TINY if args.tiny else FULL))
    for k, v in (("eval_epochs", args.eval_epochs), ("eval_models", args.eval_models),
                 ("dm_iterations", args.dm_iterations), ("disc_epochs", args.disc_epochs)):
        if v is not None:
            cfg[k] = v
    if args.prior_steps is not None:
        cfg["prior"]["steps"] = args.prior_steps
    for item in args.set:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = cfg
        for k in path:
            node = node.get(k) if isinstance(node.get(k), dict) else None
            if node is None:
                raise SystemExit(f"--set {item}: unknown setting {key!r}; settings: {json.dumps(cfg)}")
        if last not in node:
            raise SystemExit(f"--set {item}: unknown setting {key!r}; settings: {json.dumps(cfg)}")
        node[last] = json.loads(value)
    bad = [i for i in args.ipc if i < 1] + [a for a in args.archs if a not in TINY_ARCHS]
    if bad:
        raise SystemExit(f"bad --ipc / --archs values {bad}; archs: {', '.join(TINY_ARCHS)}")
    folder, out = Path(args.folder), Path(args.out)
    if args.restore and not folder.exists():
        for archive in [a for a in args.restore if Path(a).is_file()]:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(folder.parent, filter="data")
            print(f"[guided] restored {folder} from {archive}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    jobs = Run(args, cfg, folder, out)
    rec = jobs.record
    rec["settings"] = cfg
    rec["config"] = dict(vars(args))
    rec["command"] = " ".join(["python", *sys.argv])
    ds = load_dataset(args.dataset or ("embedded" if args.tiny else "fashion_mnist"), data_dir=args.data_dir,
                      progress=False)
    rec["dataset"] = ds.name
    root = jax.random.key(args.seed)
    arch_name = (lambda a: TINY_ARCHS[a]) if args.tiny else (lambda a: a)

    def publish():
        write_json(jobs.status_path, {k: rec[k] for k in ("sets", "evals", "prior", "classifier", "calls")})
        record = {**rec, "timing_by_kind_s": {k: round(v, 1) for k, v in jobs.timing.items()}}
        write_json(out / "guided_gpu.json", record)
        (out / "guided_gpu.md").write_text(results_md(record, args))

    try:
        # ---- 1. the prior
        pc = cfg["prior"]
        prior_dir = folder / "prior"
        prior = SmallPrior(num_classes=ds.num_classes, image_shape=ds.image_shape, pixel_mean=tuple(map(float, ds.mean)),
                           pixel_std=tuple(map(float, ds.std)), unet_width=pc["width"], unet_depth=pc["depth"],
                           ae_width=pc["ae_width"])
        ptc = PriorTrainConfig(steps=pc["steps"], ae_steps=pc["ae_steps"], batch_size=pc["batch"], seed=args.seed)
        total = ptc.steps + ptc.ae_steps
        done_steps = rec["prior"].get("step", 0)
        while done_steps < total:
            stop = min(total, done_steps + pc["chunk"])
            r = jobs.job(f"prior steps {done_steps}-{stop}", "prior", lambda stop=stop: train_prior(
                prior, ds, ptc, prior_dir, resume=True, sample_every=ptc.steps, checkpoint_every=pc["chunk"],
                log_every=100, progress=False, stop_at=stop))
            if r is None:
                publish()
                return 0
            history = r[2]
            done_steps = stop
            rec["prior"] = {"step": stop, "total": total, "config": prior.config(), "train": dataclasses.asdict(ptc),
                            "loss": history[-1]["loss"] if history else None,
                            "train_seconds": history[-1]["seconds"] if history else None}
            publish()
        prior, params, meta = load_prior(prior_dir)
        rec["prior"]["num_params"] = int(sum(np.size(v) for v in jax.tree.leaves(params)))

        # ---- 2. classifier and the real scores
        def classifier_job():
            c, _ = load_or_train_classifier(folder / "classifier", jax.random.fold_in(root, 1), ds,
                                            model=cfg["clf_model"], config=TrainConfig(epochs=cfg["clf_epochs"]),
                                            progress=False)
            path = folder / "real_scores.npz"
            if path.is_file():
                with np.load(path) as z:
                    s = z["scores"]
            else:
                s = c.scores(ds.x_train, ds.y_train)
                np.savez(path, scores=s)
            return c, s
        r = jobs.job("classifier", "classifier", classifier_job)
        if r is None:
            publish()
            return 0
        clf, real_scores = r
        rec["classifier"] = {**clf.meta, "test_acc": round(100 * float(np.mean(clf.accuracy(ds.x_test, ds.y_test))), 2)}
        publish()

        # ---- 3./4. sets and evaluations
        def set_dir(ipc, name):
            return folder / f"ipc{ipc}" / name

        def load_set(ipc, name):
            """The set as saved (set.npz), or its float16 copy restored from the archive (set16.npz)."""
            path = set_dir(ipc, name) / "set.npz"
            with np.load(path if path.is_file() else path.with_name("set16.npz")) as z:
                return z["x"].astype(np.float32), z["y"]

        transforms = {}

        def finish_set(ipc, name, x, y, info):
            """Save the set and its metrics (kl vs the real histogram, recognition, diversity, coverage)."""
            d = set_dir(ipc, name)
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / "set.npz", x=np.asarray(x, np.float32), y=np.asarray(y, np.int32))
            np.savez(d / "set16.npz", x=np.asarray(x, np.float16), y=np.asarray(y, np.int32))  # for the archive
            scores = clf.scores(x, y)
            if ipc not in transforms:  # the transform DAG's targets are drawn in (difficulty_targets)
                tf = fit_transforms(real_scores, ds.y_train, ipc, num_classes=ds.num_classes)
                transforms[ipc] = (np.asarray(tf.search.lo), np.asarray(tf.search.hi),
                                   target_weights("real", ds.num_classes, tf.pool_transformed, ds.y_train))
            lo, hi, real_w = transforms[ipc]
            m = {"ipc": ipc, "name": name, "kl_real": mean_kl(real_w, scores, np.asarray(y), lo, hi),
                 "mean_d": float(scores.mean()), "recognised": round(100 * float(np.mean(clf.accuracy(x, y))), 2),
                 **set_metrics(clf, x, y, ds, max_real=cfg["max_real"]), **info}
            rec["sets"][f"ipc{ipc}/{name}"] = m
            publish()
            return m

        def generated(ipc, name, gc: GenerateConfig):
            def job():
                d = set_dir(ipc, name)
                resume = gc.guidance == "acs" and (d / "checkpoints").exists()
                s = generate_set(prior, params, ds, gc, d, classifier=clf, prior_path=str(prior_dir), resume=resume,
                                 progress=False, real_scores=real_scores)
                from jaxdd.data.distilled import DistilledSet

                dist = DistilledSet.load(d)
                info = {"kind": gc.guidance, "target": gc.target if gc.guidance == "dag" or gc.pool_factor > 1 else None,
                        "kl_target": s["kl_mean"] if (gc.guidance == "dag" or gc.pool_factor > 1) else None,
                        "cfg": gc.cfg_scale, "pool_factor": gc.pool_factor, "curricula": gc.curricula,
                        "generated": s["generated"], "seconds_generate": s["seconds_generate"],
                        "seconds_per_image": s["seconds_per_image"], "dag_abs_error": s.get("dag_abs_error"),
                        "adv_loss": s.get("adv_loss"), "disc_loss": s.get("disc_loss")}
                return finish_set(ipc, name, dist.images, dist.labels, info)
            return job

        def specs(ipc):
            base = dict(ipc=ipc, steps=cfg["ddim_steps"], batch_size=cfg["gen_batch"], pad_to_batch=True,
                        seed=args.seed + ipc)
            out_ = [(f"unguided_cfg{w:g}", "gen", GenerateConfig(guidance="none", cfg_scale=w, **base)) for w in CFGS]
            out_ += [("dag_real", "gen", GenerateConfig(guidance="dag", target="real", cfg_scale=GUIDED_CFG, **base)),
                     ("dag_hill", "gen", GenerateConfig(guidance="dag", target="hill", cfg_scale=GUIDED_CFG, **base)),
                     ("dgs_unguided_pool", "gen", GenerateConfig(guidance="none", target="real", pool_factor=POOL_FACTOR,
                                                                 cfg_scale=GUIDED_CFG, **base)),
                     ("dgs_dag_pool", "gen", GenerateConfig(guidance="dag", target="real", pool_factor=POOL_FACTOR,
                                                            cfg_scale=GUIDED_CFG, **base))]
            out_ += [(f"acs_k{k}", "acs", GenerateConfig(guidance="acs", curricula=k, cfg_scale=GUIDED_CFG,
                                                         disc_epochs=cfg["disc_epochs"], **base))
                     for k in ACS_K.get(ipc, ()) if ipc % k == 0]
            return out_

        def make_random(ipc):
            def job():
                x, y = random_real(jax.random.fold_in(root, 50 + ipc), ds, ipc)
                return finish_set(ipc, "random_real", np.asarray(x), np.asarray(y), {"kind": "random real"})
            return job

        def make_dm(ipc):
            def job():
                from jaxdd.distill import RealData, build_method, distill
                from jaxdd.models import create_network

                net = create_network(arch_name("convnet"), num_classes=ds.num_classes, input_shape=ds.image_shape)
                method = build_method("dm", net, dataset=ds, ipc=ipc, iterations=cfg["dm_iterations"],
                                      batch_real=cfg["dm_batch_real"])
                t = time.time()
                res = distill(method, RealData.from_dataset(ds), ds, seed=args.seed + ipc,
                              out=set_dir(ipc, "dm") / "run", resume=True, checkpoint_every=max(1, cfg["dm_iterations"] // 4),
                              final_eval=False, tensorboard=False, progress=False)
                return finish_set(ipc, "dm", np.asarray(res.distilled.images), np.asarray(res.distilled.labels),
                                  {"kind": "dm", "iterations": cfg["dm_iterations"], "batch_real": cfg["dm_batch_real"],
                                   "seconds_distill": round(time.time() - t, 1)})
            return job

        def make_eval(ipc, name, arch):
            def job():
                x, y = load_set(ipc, name)
                r = evaluate_set(x, y, ds, arch_name(arch), "dc", key=jax.random.fold_in(root, 1000 * ipc + 7),
                                 num_models=cfg["eval_models"], epochs=cfg["eval_epochs"], progress=False)
                rec["evals"][f"ipc{ipc}/{name}/{arch}"] = {k: r[k] for k in ("mean", "std", "accs", "epochs",
                                                                              "num_models", "preset")}
                publish()
                return r
            return job

        def best_cfg(ipc):
            accs = {w: rec["evals"].get(f"ipc{ipc}/unguided_cfg{w:g}/convnet", {}).get("mean") for w in CFGS}
            if any(v is None for v in accs.values()):
                return None
            return max(CFGS, key=lambda w: accs[w])

        only = set(args.only.split(",")) if args.only else None
        todo = {}  # ipc -> [(name, kind, job)]
        for ipc in args.ipc:
            t = [(n, k, (lambda n=n, gc=gc, ipc=ipc: generated(ipc, n, gc)())) for n, k, gc in specs(ipc)]
            t += [("random_real", "random", make_random(ipc)), ("dm", "dm", make_dm(ipc))]
            todo[ipc] = [x for x in t if only is None or x[0] in only]

        def sets_and_convnet(ipc, acs: bool):
            for name, kind, fn in todo[ipc]:
                if (kind == "acs") != acs:
                    continue
                key = f"ipc{ipc}/{name}"
                if key not in rec["sets"]:
                    if kind == "acs":  # K - 1 discriminators, each compiled for its own set size
                        k = int(name.rsplit("k", 1)[1])
                        jobs.job(f"set {key}", f"acs_{ipc}_k{k}", fn, default=20.0 + 12.0 * k)
                    else:
                        jobs.job(f"set {key}", f"{kind}_{ipc}" if kind in ("gen", "dm") else kind, fn)
                if key in rec["sets"] and "convnet" in args.archs and f"{key}/convnet" not in rec["evals"]:
                    jobs.job(f"eval {key}/convnet", f"eval_convnet_{ipc}", make_eval(ipc, name, "convnet"))

        def other_archs(ipc):
            w = best_cfg(ipc)
            for arch in [a for a in args.archs if a != "convnet"]:
                for name, _, _ in todo[ipc]:
                    if name.startswith("unguided_cfg") and (w is None or name != f"unguided_cfg{w:g}"):
                        continue
                    key = f"ipc{ipc}/{name}"
                    if key in rec["sets"] and f"{key}/{arch}" not in rec["evals"]:
                        jobs.job(f"eval {key}/{arch}", f"eval_{arch}_{ipc}", make_eval(ipc, name, arch))

        # order (what a short budget gets first): every non-ACS set with its ConvNet score; ACS, then the
        # other architectures, at the smaller IPCs; the largest IPC's ACS (many discriminator
        # compilations) and its other architectures last
        largest = max(args.ipc) if len(args.ipc) > 1 else None
        for ipc in args.ipc:
            sets_and_convnet(ipc, acs=False)
        for ipc in [i for i in args.ipc if i != largest]:
            sets_and_convnet(ipc, acs=True)
        for ipc in [i for i in args.ipc if i != largest]:
            other_archs(ipc)
        if largest is not None:
            sets_and_convnet(largest, acs=True)
            other_archs(largest)
        # a few grids: the prior's samples and the IPC-10 sets (first image rows)
        grid_ipc = 10 if 10 in args.ipc else args.ipc[-1]
        for name in ("dag_real",):
            if (set_dir(grid_ipc, name) / "set.npz").is_file() or (set_dir(grid_ipc, name) / "set16.npz").is_file():
                x, y = load_set(grid_ipc, name)
                save_class_grid(out / f"grid_ipc{grid_ipc}_{name}.png", ds.denormalize(x), y, ds.num_classes,
                                min(grid_ipc, 10))
        fig = set_dir(grid_ipc, "dag_real") / "difficulty.png"
        if fig.is_file():
            (out / f"difficulty_ipc{grid_ipc}_dag_real.png").write_bytes(fig.read_bytes())
        grids = sorted((prior_dir / "samples").glob("step_*.png"))
        if grids:
            (out / "prior_samples.png").write_bytes(grids[-1].read_bytes())
    finally:
        publish()
        if args.tar:
            pack(folder, out, rec)
    return 0


def pack(folder: Path, out: Path, rec: dict) -> None:
    """Two archives (each under the 16 MiB a file of $OUT may have): ``guided_gpu.tar.gz`` with the
    prior (its training checkpoints only while unfinished), the classifier, the scores, the status,
    each set's generate.json / difficulty.png and, only while the set is unfinished, its ACS
    checkpoints or DM run; ``guided_sets.tar.gz`` with every set as float16 (``set16.npz``, what a
    rerun evaluates the still unevaluated architectures on). No pools, no float32 sets."""
    def finished(parts):
        d = folder / parts[1] / parts[2]
        return (d / "set.npz").is_file() or (d / "set16.npz").is_file()

    def main_part(ti):
        parts = Path(ti.name).parts
        if len(parts) >= 2 and parts[1] == "prior" and "checkpoints" in parts:
            return None if rec["prior"].get("step", 0) >= rec["prior"].get("total", 1) else ti
        if len(parts) >= 4 and parts[1].startswith("ipc"):  # name/ipcN/set/<file or folder>/...
            if parts[3] in ("generate.json", "difficulty.png"):
                return ti
            if parts[3] in ("set.npz", "set16.npz", "pool", "distilled.npz", "distilled.json", "samples.png"):
                return None
            return None if finished(parts) else ti
        return ti

    def sets_part(ti):
        parts = Path(ti.name).parts
        if len(parts) <= 3 or (len(parts) == 4 and parts[3] == "set16.npz"):
            return ti if ti.isdir() or parts[-1] == "set16.npz" else None
        return None

    for name, keep in (("guided_gpu.tar.gz", main_part), ("guided_sets.tar.gz", sets_part)):
        with tarfile.open(out / name, "w:gz") as tar:
            tar.add(folder, arcname=folder.name, filter=keep)
        print(f"[guided] packed {out / name} ({(out / name).stat().st_size / 1e6:.1f} MB)", flush=True)


def results_md(record: dict, args) -> str:
    """The Measured table: one row per (IPC, set), accuracy per architecture and the set metrics."""
    archs = args.archs
    lines = [f"# guided generation: {record.get('dataset')} ({record['calls'][-1]['backend']})", "",
             f"`{record.get('command')}`", "",
             f"Prior: {json.dumps({k: record['prior'].get(k) for k in ('step', 'total', 'loss', 'train_seconds', 'num_params')})}",
             f"Classifier: {record['classifier'].get('model')}, test accuracy {record['classifier'].get('test_acc')} %",
             f"Evaluation: preset dc, {record['settings']['eval_epochs']} epochs, "
             f"{record['settings']['eval_models']} models per set and architecture (paired keys)", "",
             "| IPC | set | " + " | ".join(archs) + " | KL real | KL target | recognised % | diversity | coverage | s/image |",
             "|" + "---|" * (len(archs) + 8)]
    best = {}  # ipc -> the unguided set with the best ConvNet accuracy
    for key, s in record["sets"].items():
        e = record["evals"].get(f"{key}/convnet")
        if s["name"].startswith("unguided_cfg") and e and e["mean"] > best.get(s["ipc"], ("", -1.0))[1]:
            best[s["ipc"]] = (s["name"], e["mean"])
    for key, s in sorted(record["sets"].items(), key=lambda kv: (kv[1]["ipc"], kv[0])):
        name = s["name"] + (" (best CFG)" if best.get(s["ipc"], ("",))[0] == s["name"] else "")
        accs = []
        for a in archs:
            e = record["evals"].get(f"{key}/{a}")
            accs.append(f"{e['mean']:.2f} ± {e['std']:.2f}" if e else "")

        def f(v, d=3):
            return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"
        lines.append(f"| {s['ipc']} | {name} | " + " | ".join(accs) + f" | {f(s.get('kl_real'))} | "
                     f"{f(s.get('kl_target'))} | {s.get('recognised')} | {f(s.get('diversity'))} | "
                     f"{f(s.get('coverage'))} | {f(s.get('seconds_per_image'), 4)} |")
    skipped = [j["job"] for j in record.get("jobs", []) if j["state"] != "done"]
    if skipped:
        lines += ["", f"Skipped for the budget in this call: {', '.join(skipped)}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from run import legacy_main

    sys.exit(legacy_main("guided_fmnist"))
