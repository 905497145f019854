"""The distillation driver: runs any registered method (see ``jaxdd.distill``) and owns the rest.

``distill(method, real, dataset, out=...)`` jits ``method.update`` and runs it for ``iterations``
on the one run loop (:func:`jaxdd.utils.run_loop.run_loop`; a tqdm bar showing the loss); every
``checkpoint_every`` iterations it saves an orbax checkpoint (``out/checkpoints``, the method
state plus the history in the metadata) and a PNG grid of the synthetic set; every
``track_every`` iterations it records the synthetic set's difficulty (mean GraNd ``‖∇_θ ℓ‖₂``
under ``track_models`` freshly initialised networks, the same networks each time, so the curve is
comparable across iterations; SDC, Wang et al. 2024, track it the same way); every
``eval_every`` iterations it trains ``eval_models`` networks on the current set for
``eval_epochs`` epochs (a quick look; the final evaluation uses the full preset).

Resume (``resume=True``) restores the latest checkpoint and its history and continues; every
random draw comes from the checkpointed method state or from keys folded from ``seed`` and the
iteration number, so a killed and resumed run ends bit-identical to an uninterrupted one. Resuming
refuses a checkpoint made with other settings (network, seed, method config, data), naming the
fields that differ; ``iterations`` may grow, continuing a finished run, unless the method's
``extendable`` is False. Ctrl-C raises ``KeyboardInterrupt`` saying where the last checkpoint is.
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
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxdd.data.distilled import DistilledSet
from jaxdd.distill.base import Method, RealData, config_dict
from jaxdd.difficulty.sdc import per_example_grad_norms
from jaxdd.utils.io import OutputError, check_output, write_json
from jaxdd.utils.labels import hard_labels
from jaxdd.utils.mesh import replicate
from jaxdd.utils.run_loop import Hook, NonFiniteError, RunConfig, run_loop  # noqa: F401 (NonFiniteError: re-exported)

# fold_in tags of the run key: independent streams for init / evaluation / tracking / final eval
_INIT, _EVAL, _TRACK, _FINAL = 0, 1, 2, 3


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


@functools.partial(jax.jit, static_argnums=0)
def _jit_update(method: Method, state: Any, real: RealData):
    """One jitted iteration; methods are hashable, so equal methods share the compiled step across
    ``distill`` calls (e.g. a resumed run in the same process)."""
    return method.update(state, real)


def _step(method: Method, state: Any, real: RealData) -> tuple[Any, dict]:
    state, metrics = _jit_update(method, state, real)
    return state, {k: float(v) for k, v in metrics.items()}


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


def _plot_history(out: Path, history: list[dict], class_names=None) -> None:
    from jaxdd.utils.images import pyplot

    plt = pyplot()

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


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """How :func:`distill` runs a method (not what the method computes).

    ``iterations`` None: ``method.config.iterations``. Every ``checkpoint_every`` iterations an
    orbax checkpoint and ``grid.png``; every ``track_every`` (default ``checkpoint_every``) the
    synthetic set's GraNd under ``track_models`` fresh networks; every ``eval_every`` (0: never) a
    quick evaluation of ``eval_models`` networks for ``eval_epochs`` epochs. The final evaluation
    (``final_eval``) uses ``eval_preset`` (None: ``method.eval_preset``) with its epochs / models
    unless ``eval_final_epochs`` / ``eval_final_models`` are set. ``extra_config`` is added to the
    run config recorded in every output (e.g. the command line).
    """

    seed: int = 0
    iterations: int | None = None
    checkpoint_every: int = 50
    track_every: int | None = None
    track_models: int = 4
    eval_every: int = 0
    eval_epochs: int = 50
    eval_models: int = 2
    final_eval: bool = True
    eval_preset: str | None = None
    eval_final_epochs: int | None = None
    eval_final_models: int | None = None
    progress: bool = True
    tensorboard: bool = True
    extra_config: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("checkpoint_every", "track_models"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        checks = [("eval_every", self.eval_every, 0)]
        if self.eval_every:
            checks += [("eval_epochs", self.eval_epochs, 1), ("eval_models", self.eval_models, 1)]
        if self.final_eval:
            checks += [("eval_final_epochs", self.eval_final_epochs, 1),
                       ("eval_final_models", self.eval_final_models, 1)]
        for name, value, low in checks:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def with_settings(cls, config: "DistillConfig | None", settings: dict) -> "DistillConfig":
        """``config`` (default: the defaults) with ``settings`` (field names) replaced."""
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(settings) - fields)
        if bad:
            raise ValueError(f"distill() has no setting(s) {bad}; the settings are DistillConfig's fields "
                             f"{sorted(fields)}")
        return dataclasses.replace(config or cls(), **settings)


def distill(method: Method, real: RealData, dataset, config: DistillConfig | None = None, *,
            out: str | Path | None = None, resume: bool = False, mesh=None,
            callback: Callable[[int, Any, dict], Any] | None = None, **settings: Any) -> DistillResult:
    """Run ``method`` on ``real`` for ``config.iterations`` (default ``method.config.iterations``).

    ``dataset`` supplies the test split, normalisation and class names (``real`` may be a pruned
    subset of its training split). ``config`` is a :class:`DistillConfig`; keyword ``settings``
    replace its fields (``distill(m, real, ds, iterations=10, final_eval=False)``). ``out=None``
    runs in memory (no checkpoints, no files). ``callback(iteration, state, metrics)`` runs after
    every iteration's bookkeeping (logging, early stopping by raising). With ``out`` and
    ``config.tensorboard`` the history (loss, GraNd per class, quick accuracies) and the grid are
    also written as TensorBoard events into ``out`` (:class:`jaxdd.utils.metric_log.MetricLog`).
    Returns a :class:`DistillResult`.
    """
    config = DistillConfig.with_settings(config, settings)
    method = method.for_dataset(dataset)  # e.g. refuses an expert buffer or a prior made for another dataset
    cfg = method.config
    iterations = cfg.iterations if config.iterations is None else int(config.iterations)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    track_every = config.checkpoint_every if config.track_every is None else config.track_every
    eval_preset = config.eval_preset or method.eval_preset
    from jaxdd.evaluate import get_preset

    preset = get_preset(eval_preset)
    run_config = {
        "method": method.name, "method_config": config_dict(cfg), "network": method.network.name,
        "dataset": dataset.name, "real_train_size": int(real.images.shape[0]),
        "real_per_class": list(real.counts), "difficulty_weights": real.weights is not None, "seed": config.seed,
        "iterations": iterations, "checkpoint_every": config.checkpoint_every, "track_every": track_every,
        "track_models": config.track_models, "eval_every": config.eval_every, "eval_epochs": config.eval_epochs,
        "eval_models": config.eval_models, "eval_preset": eval_preset, "devices": 1 if mesh is None else mesh.size,
        **config.extra_config}

    root = jax.random.key(config.seed)
    state = method.init(jax.random.fold_in(root, _INIT), real)
    if (config.final_eval or config.eval_every) and preset.lr_from_set and method.synthetic(state)[2] is None:
        raise ValueError(f"evaluation preset {preset.name!r} trains with the set's learned lr, but {method.name} "
                         "learns none; choose the dc or dc-dsa preset (--eval-preset)")
    if out is not None:
        out = check_output(out, folder=True)
    real = replicate(real, mesh)
    state = replicate(state, mesh)
    loop = RunConfig(
        steps=iterations, checkpoint_dir=None if out is None else out / "checkpoints", resume=resume,
        checkpoint_every=config.checkpoint_every, record=run_config, may_change=_RESUMABLE,
        extendable=method.extendable,
        not_extendable=f"{method.name} cannot extend a run: its schedule depends on the total",
        unit="iteration", kind="a distillation run", out=out, desc=f"distill {method.name}",
        progress=config.progress, nan_message=f"the synthetic set became NaN or inf (metrics {{metrics}}); lower "
        f"the image learning rate (lr_img={cfg.lr_img}) or the SDC weight")

    k_track = jax.random.fold_in(root, _TRACK)
    history: list[dict] = []
    last_synthetic: dict = {}
    tb: dict = {"log": None, "logged": 0}

    def synthetic(it: int, st: Any) -> tuple:
        """``method.synthetic(state)`` at iteration ``it``, computed once (LD3M decodes through its prior)."""
        if last_synthetic.get("iteration") != it:
            last_synthetic.update(iteration=it, value=method.synthetic(st))
        return last_synthetic["value"]

    def record_difficulty(it: int, st: Any, metrics: dict | None = None) -> dict:
        images, labels, _ = synthetic(it, st)
        g = np.asarray(_track(method.network, images, labels, k_track, config.track_models)).mean(0)
        lab = hard_labels(np.asarray(labels))
        per_class = [float(g[lab == c].mean()) if np.any(lab == c) else float("nan")
                     for c in range(real.num_classes)]
        return {"iteration": it, "grand": float(g.mean()), "grand_per_class": per_class}

    def quick_eval(it: int, st: Any, metrics: dict) -> dict:
        from jaxdd.evaluate import evaluate_set

        images, labels, lr = synthetic(it, st)
        r = evaluate_set(np.asarray(images), np.asarray(labels), dataset, method.network, eval_preset,
                         key=jax.random.fold_in(jax.random.fold_in(root, _EVAL), it), num_models=config.eval_models,
                         lr=None if lr is None else float(lr), epochs=config.eval_epochs, progress=False)
        return {"iteration": it, "eval_acc": r["mean"], "eval_std": r["std"]}

    def metric_log(first: int):
        """TensorBoard events beside history.json, opened at the first iteration logged; events an
        interrupted run left at iterations >= ``first`` are dropped (all of them on a fresh start)."""
        if tb["log"] is None and out is not None and config.tensorboard:
            from jaxdd.utils.metric_log import MetricLog

            tb["log"] = MetricLog(out, purge_step=first if first > 1 else 0, list_names=dataset.class_names)
            tb["logged"] = sum(h["iteration"] < first for h in history) if first > 1 else 0
        return tb["log"]

    def log_new(it: int, st: Any = None, metrics: dict | None = None) -> None:
        log = metric_log(it)
        if log is not None:
            for h in history[tb["logged"]:]:
                log.scalars(h["iteration"], {k: v for k, v in h.items() if k != "iteration"})
            tb["logged"] = len(history)

    def save_grid(it: int, st: Any, metrics: dict) -> None:
        _save_grid(out / "grid.png", _distilled_set(synthetic(it, st), dataset, run_config), dataset,
                   metric_log(it), it)

    hooks = [Hook(lambda it, st, m: {"iteration": it, **m}),
             Hook(record_difficulty, every=track_every, at_start=True),
             Hook(quick_eval, every=config.eval_every)]
    if out is not None:
        hooks.append(Hook(save_grid, every=config.checkpoint_every, at_end=True, after_checkpoint=True))
    hooks.append(Hook(log_new, after_checkpoint=True))
    if callback is not None:
        hooks.append(Hook(lambda it, st, m: callback(it, st, m), after_checkpoint=True))
    try:
        run = run_loop(lambda st, i: _step(method, st, real), state, loop, hooks, history=history,
                       postfix=lambda m: {"loss": f"{m.get('loss', float('nan')):.4g}"})
    finally:
        if tb["log"] is not None:
            tb["log"].flush()
    state = run.state
    if not any(h.get("iteration") == iterations and "grand" in h for h in history):
        history.append(record_difficulty(iterations, state))

    distilled = _distilled_set(synthetic(iterations, state), dataset, run_config)
    evaluation = None
    if config.final_eval:
        from jaxdd.evaluate import evaluate_distilled

        try:
            evaluation = evaluate_distilled(distilled, dataset, archs=(method.network,), preset=eval_preset,
                                            key=jax.random.fold_in(root, _FINAL), num_models=config.eval_final_models,
                                            epochs=config.eval_final_epochs, progress=config.progress)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted during the final evaluation; {run.resume_hint(loop)}") from None
    if out is not None:
        try:
            distilled.save(out / "distilled")
            _save_grid(out / "grid.png", distilled, dataset, metric_log(iterations + 1), iterations)
            write_json(out / "history.json", history)
            _plot_history(out, history, dataset.class_names)
            log = tb["log"]
            if log is not None:
                log_new(iterations + 1)
                if evaluation:
                    log.scalars(iterations, {f"final_acc/{r['arch']}": r["mean"] for r in evaluation["results"]})
                log.close()
            seconds, ran = run.seconds, iterations - run.start
            write_json(out / "results.json", {
                "config": run_config, "resumed_from": run.resumed_from, "seconds": seconds,
                "iterations_per_second": ran / seconds if seconds > 0 and ran > 0 else None,
                "final_grand": [h for h in history if "grand" in h][-1]["grand"], "evaluation": evaluation,
                "table": evaluation_rows(method.name, cfg, evaluation) if evaluation else None})
        except OutputError as err:  # a full disk at the end: keep the evaluation in the message
            done = "; ".join(f"{r['arch']} ({r['preset']}) {r['mean']:.2f} ± {r['std']:.2f} %"
                             for r in (evaluation or {}).get("results", []))
            raise OutputError(f"{err}; " + (f"final evaluation: {done}; " if done else "")
                              + run.resume_hint(loop)) from None
    return DistillResult(distilled=distilled, state=state, history=history, evaluation=evaluation,
                         out=out, resumed_from=run.resumed_from, seconds=run.seconds)


# run settings that may change on resume: they do not change the state's trajectory
_RESUMABLE = ("iterations", "checkpoint_every", "track_every", "eval_every", "eval_epochs", "eval_models",
              "eval_preset", "devices")


def evaluation_rows(method_name: str, cfg: Any, evaluation: dict) -> list[dict]:
    """One table row per evaluated architecture."""
    rows = []
    for r in evaluation["results"]:
        rows.append({"method": method_name, "ipc": cfg.ipc, "sdc": cfg.sdc, "arch": r["arch"],
                     "preset": r["preset"], "epochs": r["epochs"], "models": r["num_models"],
                     "acc_mean": r["mean"], "acc_std": r["std"]})
    return rows
