"""The distillation driver: runs any registered method (see ``jaxdd.distill``) and owns the rest.

``distill(method, real, dataset, out=...)`` jits ``method.update`` and runs it for ``iterations``
with a tqdm bar showing the loss; every ``checkpoint_every`` iterations it saves an orbax
checkpoint (``out/checkpoints``, the method state plus the history in the metadata) and a PNG grid
of the synthetic set; every ``track_every`` iterations it records the synthetic set's difficulty
(mean GraNd ``‖∇_θ ℓ‖₂`` under ``track_models`` freshly initialised networks, the same networks
each time, so the curve is comparable across iterations; SDC, Wang et al. 2024, track it the same
way); every ``eval_every`` iterations it trains ``eval_models`` networks on the current set for
``eval_epochs`` epochs (a quick look; the final evaluation uses the full preset).

Resume (``resume=True``) restores the latest checkpoint and its history and continues; every
random draw comes from the checkpointed method state or from keys folded from ``seed`` and the
iteration number, so a killed and resumed run ends bit-identical to an uninterrupted one. Resuming
refuses a checkpoint made with other settings (network, seed, method config, data), naming the
fields that differ; ``iterations`` may grow, continuing a finished run, unless the method sets
``extendable = False``. Ctrl-C raises ``KeyboardInterrupt`` saying where the last checkpoint is.
NaN guard: after every update all floating leaves of the state are checked; a non-finite value
raises :class:`NonFiniteError` (a ``ValueError``) before anything is saved, so the last good
checkpoint stays the latest.

Outputs in ``out``: ``checkpoints/``, ``grid.png`` (one column per class, names on top),
``difficulty.png`` and ``loss.png``, ``history.json``, TensorBoard ``events.out.tfevents.*`` (the
history's numbers and the grid; ``tensorboard --logdir out``), ``distilled/`` (a
:class:`~jaxdd.data.distilled.DistilledSet`) and ``results.json`` (run config, final evaluation
table, timing); all written atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.data.distilled import DistilledSet
from jaxdd.distill.base import Method, RealData, config_dict
from jaxdd.distill.losses import per_example_grad_norms
from jaxdd.utils.io import OutputError, check_output, to_jsonable, write_json
from jaxdd.utils.labels import hard_labels
from jaxdd.utils.mesh import replicate

# fold_in tags of the run key: independent streams for init / evaluation / tracking / final eval
_INIT, _EVAL, _TRACK, _FINAL = 0, 1, 2, 3


class NonFiniteError(ValueError):
    """The synthetic set (or another learnable tensor) became NaN or inf."""


@dataclasses.dataclass
class DistillResult:
    distilled: DistilledSet
    state: Any
    history: list[dict]
    evaluation: dict | None
    out: Path | None
    resumed_from: int | None
    seconds: float  # wall time of the iterations run in this call


def synthetic_difficulty(network, images: jax.Array, labels: jax.Array, key: jax.Array,
                         num_models: int = 4) -> jax.Array:
    """(num_models, N) per-example GraNd ``‖∇_θ ℓ(f_θ(x̃_i), ỹ_i)‖₂`` of the synthetic set under
    ``num_models`` freshly initialised networks ``net.init(split(key, M)[m])`` (Paul et al. 2021).
    Soft-label rows are scored against their argmax."""
    labels = hard_labels(labels)
    variables = jax.vmap(network.init)(jax.random.split(key, num_models))
    return jax.vmap(lambda v: per_example_grad_norms(network, v, images, labels))(variables)


def _finite(state: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)
              if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@functools.partial(jax.jit, static_argnums=0)
def _step(method: Method, state: Any, real: RealData):
    """One jitted iteration and the NaN guard; methods are hashable, so equal methods share the
    compiled step across ``distill`` calls (e.g. a resumed run in the same process)."""
    state, metrics = method.update(state, real)
    return state, metrics, _finite(state)


_track = jax.jit(synthetic_difficulty, static_argnums=(0, 4))


def _distilled_set(synthetic: tuple, dataset, run_config: dict) -> DistilledSet:
    """The library's set format from ``method.synthetic(state)``'s ``(images, labels, lr)``."""
    images, labels, lr = synthetic
    return DistilledSet(images=np.asarray(images, np.float32), labels=np.asarray(labels),
                        num_classes=dataset.num_classes, dataset=dataset.name, mean=np.asarray(dataset.mean),
                        std=np.asarray(dataset.std), lr=None if lr is None else float(lr),
                        zca=dataset.zca is not None, config=run_config)


def _save_grid(path: Path, distilled: DistilledSet, dataset, log=None, step: int = 0) -> None:
    """``grid.png`` (classes as columns, named); also to the TensorBoard ``log`` when given."""
    from jaxdd.utils.images import class_grid, save_png

    pixels = dataset.denormalize(distilled.images)
    grid = class_grid(pixels, distilled.labels, distilled.num_classes, dataset.class_names)
    save_png(path, grid)
    if log is not None:
        log.image(step, "synthetic", grid)


def _log_new(log, history: list[dict], logged: int) -> int:
    """Write the history entries from ``logged`` on to the TensorBoard ``log``; returns ``len(history)``."""
    if log is not None:
        for h in history[logged:]:
            log.scalars(h["iteration"], {k: v for k, v in h.items() if k != "iteration"})
    return len(history)


def _plot_history(out: Path, history: list[dict], class_names=None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from jaxdd.utils.images import save_figure

    tracked = [h for h in history if "grand" in h]
    if tracked:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        its = [h["iteration"] for h in tracked]
        per_class = np.asarray([h["grand_per_class"] for h in tracked])
        names = class_names if class_names is not None and len(class_names) == per_class.shape[1] \
            else [f"class {c}" for c in range(per_class.shape[1])]
        colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for c, name in enumerate(names):
            ax.plot(its, per_class[:, c], lw=0.9, alpha=0.7, color=colors(c % colors.N), label=name)
        ax.plot(its, [h["grand"] for h in tracked], "k-o", ms=3, lw=1.6, label="mean")
        ax.set_xlabel("iteration")
        ax.set_ylabel("GraNd of the synthetic set\n(fresh networks)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(names) // 21)
        save_figure(out / "difficulty.png", fig)
    losses = [h for h in history if "loss" in h]
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([h["iteration"] for h in losses], [h["loss"] for h in losses], lw=0.8, label="matching loss")
        ax.set_xlabel("iteration")
        ax.set_ylabel("matching loss per class")
        ax.legend(fontsize=8)
        save_figure(out / "loss.png", fig)


def distill(method: Method, real: RealData, dataset, *, seed: int = 0, iterations: int | None = None,
            out: str | Path | None = None, resume: bool = False, checkpoint_every: int = 50,
            track_every: int | None = None, track_models: int = 4, eval_every: int = 0, eval_epochs: int = 50,
            eval_models: int = 2, final_eval: bool = True, eval_preset: str | None = None,
            eval_final_epochs: int | None = None, eval_final_models: int | None = None, mesh=None,
            progress: bool = True, extra_config: dict | None = None, tensorboard: bool = True,
            callback: Callable[[int, Any, dict], Any] | None = None) -> DistillResult:
    """Run ``method`` on ``real`` for ``iterations`` (default ``method.config.iterations``).

    ``dataset`` supplies the test split, normalisation and class names (``real`` may be a pruned
    subset of its training split). ``out=None`` runs in memory (no checkpoints, no files).
    ``eval_preset`` defaults to ``dc`` for methods without DSA and ``dc-dsa`` otherwise; the final
    evaluation's epochs / models default to the preset's. ``callback(iteration, state, metrics)``
    runs after every iteration's bookkeeping (logging, early stopping by raising). With ``out`` and
    ``tensorboard`` the history (loss, GraNd per class, quick accuracies) and the grid are also
    written as TensorBoard events into ``out`` (:class:`jaxdd.utils.metric_log.MetricLog`). Returns a
    :class:`DistillResult`.
    """
    from tqdm.auto import tqdm

    cfg = method.config
    iterations = cfg.iterations if iterations is None else int(iterations)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    for name, v in (("checkpoint_every", checkpoint_every), ("track_models", track_models)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    track_every = checkpoint_every if track_every is None else track_every
    if eval_preset is None:  # a config may name its own preset (mtt / datm: the learned lr, soft labels)
        eval_preset = getattr(cfg, "eval_preset", None) or ("dc-dsa" if getattr(cfg, "dsa", False) else "dc")
    preset = _check_eval_settings(eval_preset, eval_every, eval_epochs, eval_models, final_eval, eval_final_epochs,
                                  eval_final_models)
    run_config = {
        "method": method.name, "method_config": config_dict(cfg), "network": method.network.name,
        "dataset": dataset.name, "real_train_size": int(real.images.shape[0]),
        "real_per_class": list(real.counts), "difficulty_weights": real.weights is not None, "seed": seed,
        "iterations": iterations, "checkpoint_every": checkpoint_every, "track_every": track_every,
        "track_models": track_models, "eval_every": eval_every, "eval_epochs": eval_epochs,
        "eval_models": eval_models, "eval_preset": eval_preset, "devices": 1 if mesh is None else mesh.size,
        **(extra_config or {})}

    root = jax.random.key(seed)
    if hasattr(method, "check_dataset"):  # optional hook: e.g. an expert buffer trained on another dataset
        method.check_dataset(dataset)
    state = method.init(jax.random.fold_in(root, _INIT), real)
    if (final_eval or eval_every) and preset.lr_from_set and method.synthetic(state)[2] is None:
        raise ValueError(f"evaluation preset {preset.name!r} trains with the set's learned lr, but {method.name} "
                         "learns none; choose the dc or dc-dsa preset (--eval-preset)")
    if out is not None:
        out = check_output(out, folder=True)
    real = replicate(real, mesh)
    state = replicate(state, mesh)
    history: list[dict] = []
    start, resumed_from = 0, None
    ckpt = None
    if out is not None:
        from jaxdd.utils.checkpoint import Checkpointer

        ckpt = Checkpointer(out / "checkpoints", max_to_keep=2)
        try:
            latest = ckpt.latest_step()
            if latest is not None and not resume:
                raise ValueError(f"{out} already holds a distillation run (checkpoint at iteration {latest}); pass "
                                 "--resume to continue it, or choose another --out folder")
            if resume and latest is not None:
                _check_resume(out, latest, ckpt.describe(latest)["metadata"].get("run") or {}, run_config,
                              getattr(method, "extendable", True))
                start, state, meta = ckpt.restore(state, step=latest)
                history = list(meta.get("history", []))
                resumed_from = start
        except BaseException:
            ckpt.close()
            raise
    saved_at = resumed_from
    log = None
    if out is not None and tensorboard:  # TensorBoard events beside history.json
        from jaxdd.utils.metric_log import MetricLog

        # TensorBoard drops events an interrupted run left at steps >= purge_step (all of them on a fresh start)
        log = MetricLog(out, purge_step=start + 1 if start else 0, list_names=dataset.class_names)
    logged = len(history)

    k_track = jax.random.fold_in(root, _TRACK)
    last_synthetic: dict = {}

    def synthetic(it: int) -> tuple:
        """``method.synthetic(state)`` at iteration ``it``, computed once (LD3M decodes through its prior)."""
        if last_synthetic.get("iteration") != it:
            last_synthetic.update(iteration=it, value=method.synthetic(state))
        return last_synthetic["value"]

    def record_difficulty(it: int) -> dict:
        images, labels, _ = synthetic(it)
        g = np.asarray(_track(method.network, images, labels, k_track, track_models)).mean(0)
        lab = hard_labels(np.asarray(labels))
        per_class = [float(g[lab == c].mean()) if np.any(lab == c) else float("nan")
                     for c in range(real.num_classes)]
        return {"iteration": it, "grand": float(g.mean()), "grand_per_class": per_class}

    def quick_eval(it: int) -> dict:
        from jaxdd.evaluate import evaluate_set

        images, labels, lr = synthetic(it)
        r = evaluate_set(np.asarray(images), np.asarray(labels), dataset, method.network.name, eval_preset,
                         key=jax.random.fold_in(jax.random.fold_in(root, _EVAL), it), num_models=eval_models,
                         lr=None if lr is None else float(lr), epochs=eval_epochs, progress=False)
        return {"iteration": it, "eval_acc": r["mean"], "eval_std": r["std"]}

    if start == 0 and not history:
        history.append(record_difficulty(0))

    t0 = time.time()
    bar = tqdm(range(start, iterations), desc=f"distill {method.name}", disable=not progress, dynamic_ncols=True,
               initial=start, total=iterations)
    it = start
    try:
        for i in bar:
            it = i + 1
            new_state, metrics, ok = _step(method, state, real)
            metrics = {k: float(v) for k, v in metrics.items()}
            if not bool(ok):
                last = ckpt.latest_step() if ckpt is not None else None
                where = (f"the last good checkpoint (iteration {last}) is kept in {out / 'checkpoints'}; "
                         "fix the setting and rerun with --resume" if last is not None else "no checkpoint was written")
                raise NonFiniteError(
                    f"iteration {it}: the synthetic set became NaN or inf (metrics {metrics}); lower the image "
                    f"learning rate (lr_img={getattr(cfg, 'lr_img', '?')}) or the SDC weight; {where}")
            state = new_state
            history.append({"iteration": it, **metrics})
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4g}")
            if track_every and it % track_every == 0:
                history.append(record_difficulty(it))
            if eval_every and it % eval_every == 0:
                history.append(quick_eval(it))
            if ckpt is not None and (it % checkpoint_every == 0 or it == iterations):
                try:
                    ckpt.save(it, state, {"run": run_config, "history": history})
                    saved_at = it
                    _save_grid(out / "grid.png", _distilled_set(synthetic(it), dataset, run_config), dataset, log, it)
                except OutputError as err:  # disk full: one line, the previous checkpoint kept
                    raise OutputError(f"{err}; {_resume_hint(out, saved_at)}") from None
            logged = _log_new(log, history, logged)
            if callback is not None:
                callback(it, state, metrics)
    except KeyboardInterrupt:
        if ckpt is not None:  # Ctrl-C during a save is raised once that save has committed
            saved_at = ckpt.latest_step()
        hint = _resume_hint(out, saved_at)
        raise KeyboardInterrupt(f"interrupted at iteration {it} of {iterations}; {hint}") from None
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
        if log is not None:
            log.flush()
    seconds = time.time() - t0
    if not any(h.get("iteration") == iterations and "grand" in h for h in history):
        history.append(record_difficulty(iterations))

    distilled = _distilled_set(synthetic(iterations), dataset, run_config)
    evaluation = None
    if final_eval:
        from jaxdd.evaluate import evaluate_distilled

        try:
            evaluation = evaluate_distilled(distilled, dataset, archs=(method.network.name,), preset=eval_preset,
                                            key=jax.random.fold_in(root, _FINAL), num_models=eval_final_models,
                                            epochs=eval_final_epochs, progress=progress)
        except KeyboardInterrupt:
            hint = _resume_hint(out, saved_at)
            raise KeyboardInterrupt(f"interrupted during the final evaluation; {hint}") from None
    if out is not None:
        try:
            distilled.save(out / "distilled")
            _save_grid(out / "grid.png", distilled, dataset, log, iterations)
            write_json(out / "history.json", history)
            _plot_history(out, history, dataset.class_names)
            if log is not None:
                _log_new(log, history, logged)
                if evaluation:
                    log.scalars(iterations, {f"final_acc/{r['arch']}": r["mean"] for r in evaluation["results"]})
                log.close()
            write_json(out / "results.json", {
                "config": run_config, "resumed_from": resumed_from, "seconds": seconds,
                "iterations_per_second": (iterations - start) / seconds if seconds > 0 and iterations > start else None,
                "final_grand": [h for h in history if "grand" in h][-1]["grand"], "evaluation": evaluation,
                "table": evaluation_rows(method.name, cfg, evaluation) if evaluation else None})
        except OutputError as err:  # a full disk at the end: keep the evaluation in the message
            done = "; ".join(f"{r['arch']} ({r['preset']}) {r['mean']:.2f} ± {r['std']:.2f} %"
                             for r in (evaluation or {}).get("results", []))
            raise OutputError(f"{err}; " + (f"final evaluation: {done}; " if done else "")
                              + _resume_hint(out, saved_at)) from None
    return DistillResult(distilled=distilled, state=state, history=history, evaluation=evaluation,
                         out=out, resumed_from=resumed_from, seconds=seconds)


def _resume_hint(out: Path | None, saved_at: int | None) -> str:
    if out is None:
        return "nothing was saved (out=None)"
    if saved_at is None:
        return f"no checkpoint was written yet: rerun the same command without --resume to start again in {out}"
    return (f"the last checkpoint (iteration {saved_at}) is in {out / 'checkpoints'}: rerun the same command with "
            "--resume to continue from it")


# run settings that may change on resume: they do not change the state's trajectory
_RESUMABLE = ("iterations", "checkpoint_every", "track_every", "eval_every", "eval_epochs", "eval_models",
              "eval_preset", "devices")


def _check_resume(out: Path, latest: int, saved: dict, now: dict, extendable: bool) -> None:
    """Refuse to resume a checkpoint made with other settings, naming the fields that differ.

    ``iterations`` may grow (the checkpoint continues) unless the method sets ``extendable =
    False`` (a schedule that depends on the total); it may not fall below the checkpoint."""
    def changed(before: dict, after: dict, skip: tuple) -> list[str]:
        show = lambda run, k: repr(run[k]) if k in run else "unset"  # noqa: E731
        return [f"{k}: {show(before, k)} in the checkpoint, {show(after, k)} now"
                for k in sorted((set(before) | set(after)) - set(skip))
                if (k in before, before.get(k)) != (k in after, after.get(k))]

    now = json.loads(json.dumps(to_jsonable(now)))  # compare as stored (JSON)
    config = changed(saved.get("method_config") or {}, now["method_config"], ("iterations",))
    run = changed(saved, now, _RESUMABLE + ("method_config",))
    iterations = now["iterations"]
    if iterations < latest:
        run.append(f"iterations: {iterations} is below the checkpoint's iteration {latest}")
    elif not extendable and iterations != saved.get("iterations"):
        run.append(f"iterations: {saved.get('iterations')!r} in the checkpoint, {iterations!r} now ({now['method']} "
                   "cannot extend a run: its schedule depends on the total)")
    parts = ([f"a different method config ({'; '.join(config)})"] if config else []) + (
        [f"different run settings ({'; '.join(run)})"] if run else [])
    if parts:
        raise ValueError(f"cannot resume {out}: it was made with {' and '.join(parts)}. Resume with the "
                         "checkpoint's settings, or choose another --out folder")


def _check_eval_settings(preset_name: str, eval_every: int, eval_epochs: int, eval_models: int, final_eval: bool,
                         final_epochs: int | None, final_models: int | None):
    """The evaluation preset and counts, checked before the first iteration (not after distilling)."""
    from jaxdd.evaluate import get_preset

    preset = get_preset(preset_name)
    checks = [("eval_every", eval_every, 0)]
    if eval_every:
        checks += [("eval_epochs", eval_epochs, 1), ("eval_models", eval_models, 1)]
    if final_eval:
        checks += [("eval_final_epochs", final_epochs, 1), ("eval_final_models", final_models, 1)]
    for name, value, low in checks:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return preset


def evaluation_rows(method_name: str, cfg: Any, evaluation: dict) -> list[dict]:
    """One table row per evaluated architecture."""
    rows = []
    for r in evaluation["results"]:
        rows.append({"method": method_name, "ipc": cfg.ipc, "sdc": getattr(cfg, "sdc", 0.0), "arch": r["arch"],
                     "preset": r["preset"], "epochs": r["epochs"], "models": r["num_models"],
                     "acc_mean": r["mean"], "acc_std": r["std"]})
    return rows
