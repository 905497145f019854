"""Guided generation of a distilled set from a diffusion prior: unguided, DAG, ACS, and DGS on
the generated pool (``jaxdd generate``).

DAG (difficulty-aware guidance, the generation-time half of "Difficulty-guided Sampling", Li et
al., arXiv 2601.10090): each sample gets a target difficulty, and DDIM is guided by
``grad_{x_t} (d(decode(x0_hat)) - d_target)^2`` with ``d = 1 - p(y|x)`` of the same classifier
DGS uses (:class:`~jaxdd.difficulty.classifier.DifficultyClassifier`, an ensemble's mean probability;
:func:`jaxdd.generative.guidance.difficulty_term`). Targets (:func:`difficulty_targets`) live in
DGS's log-transformed space: per class, the transform's bounds ``(lo, hi)`` are fitted on the
real images' scores (the pool it would be fitted on does not exist yet), the target distribution
is the real histogram or a preset / file (:mod:`jaxdd.sample.targets`), rounded to per-bin
counts, drawn uniformly inside each bin and mapped back by ``d = lo (hi / lo)^d~``.

With ``pool_factor`` F > 1 the generator makes F x IPC images per class and DGS
(:func:`~jaxdd.sample.dgs.dgs_select`) chooses IPC of them for the same target (DAG + DGS; F = 5
in the DGS paper). ACS (:mod:`jaxdd.generative.acs`) generates IPC per class in K curricula.

Guidance scale for DAG *(open)*: ``DAG_SCALE = 0.05`` (``--scale``). With the shared normalisation
each guided step moves a sample by ``s sqrt(1 - alpha_bar_t) RMS(eps_hat)``, so over the 16 steps
of the default window the push is at most ``16 s`` = 0.8 of the noise level: large enough to
change a classifier's confidence, bounded so that no single step leaves the data manifold. IGD's
0.0075 (a 1000-class DiT-XL/2 whose gradients carry many more pixels) bounds it at 0.12. Not
tuned on a trained prior yet: tune ``--scale`` per prior.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.data.dataset import Dataset
from jaxdd.generative.acs import ACS, ACSConfig, has_run, run_acs
from jaxdd.generative.guidance import difficulty_term
from jaxdd.generative.prior import DiffusionPrior, check_compatible, to_dataset_space
from jaxdd.generative.sampling import DEFAULT_CFG, DEFAULT_STEPS, generate, window_steps
from jaxdd.models import Network
from jaxdd.sample.dgs import dgs_select, fit_transforms
from jaxdd.sample.targets import load_target, preset_weights, target_counts
from jaxdd.sample.metrics import class_histograms, histogram_kl, set_metrics
from jaxdd.sample.transform import NUM_BINS, histogram, inverse_log_transform, log_transform

GUIDANCES = ("none", "dag", "acs")
DAG_SCALE = 0.05


@dataclasses.dataclass(frozen=True)
class ClassifierLogits:
    """``classifier_fn(variables, images) -> logits`` for guidance: images in the prior's normalisation
    are mapped to the dataset's, and the M stacked models give ``log mean_m softmax(f_m(x))`` (so
    ``softmax`` of the result is the ensemble probability DGS scores with). Hashable."""

    net: Network
    prior: DiffusionPrior
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, variables: Any, images: jax.Array) -> jax.Array:
        x = to_dataset_space(self.prior, images, np.asarray(self.mean), np.asarray(self.std))
        logp = jax.nn.log_softmax(jax.vmap(lambda v: self.net.logits(v, x))(variables).astype(jnp.float32), -1)
        return jax.scipy.special.logsumexp(logp, axis=0) - jnp.log(logp.shape[0])


@dataclasses.dataclass(frozen=True)
class DifficultyTargets:
    """Per-sample target difficulties and the per-class transform they were drawn in."""

    raw: np.ndarray          # (N,) targets d in [0, 1]
    transformed: np.ndarray  # (N,) the same in the transformed space
    lo: np.ndarray           # (C,) transform bounds fitted on the real scores
    hi: np.ndarray
    weights: np.ndarray      # (C, bins) the target distribution per class (sums to 1)


def target_weights(target: Any, num_classes: int, real_transformed: np.ndarray | None = None,
                   real_labels: np.ndarray | None = None, num_bins: int = NUM_BINS) -> np.ndarray:
    """``(C, bins)`` target probabilities: ``"real"`` = the histogram of the class's transformed real
    scores, a preset name, or weights / a file (:func:`jaxdd.sample.targets.load_target`)."""
    target = load_target(target, num_bins, num_classes)
    if isinstance(target, str) and target == "real":
        if real_transformed is None:
            raise ValueError("target 'real' needs the real images' difficulty scores")
        hist = np.stack([np.asarray(histogram(real_transformed, num_bins, real_labels == c))
                         for c in range(num_classes)]).astype(np.float64)
        if np.any(hist.sum(-1) == 0):
            raise ValueError(f"target 'real': no real images of class(es) {np.flatnonzero(hist.sum(-1) == 0).tolist()}")
        return hist / hist.sum(-1, keepdims=True)
    w = preset_weights(target, num_bins) if isinstance(target, str) else target
    return np.broadcast_to(w, (num_classes, num_bins)).astype(np.float64)


def difficulty_targets(key: jax.Array, labels: np.ndarray, num_classes: int, target: Any, real_scores: np.ndarray,
                       real_labels: np.ndarray, num_bins: int = NUM_BINS) -> DifficultyTargets:
    """Draw one target difficulty per entry of ``labels`` (module docstring): per class, per-bin
    counts by largest-remainder rounding of the target, uniform inside each bin, in random order."""
    labels = np.asarray(labels)
    per_class = np.bincount(labels, minlength=num_classes)
    tf = fit_transforms(real_scores, real_labels, int(max(1, per_class.max())), num_classes=num_classes,
                        num_bins=num_bins)
    lo, hi = np.asarray(tf.search.lo), np.asarray(tf.search.hi)
    weights = target_weights(target, num_classes, tf.pool_transformed, np.asarray(real_labels), num_bins)
    transformed = np.zeros(len(labels), np.float32)
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        counts = target_counts(weights[c], len(rows))
        bins = np.repeat(np.arange(num_bins), counts)
        kc = jax.random.fold_in(key, c)
        u = np.asarray(jax.random.uniform(jax.random.fold_in(kc, 0), (len(rows),)))
        order = np.asarray(jax.random.permutation(jax.random.fold_in(kc, 1), len(rows)))
        transformed[rows] = ((bins + u) / num_bins)[order]
    raw = np.clip(np.asarray(inverse_log_transform(transformed, lo[labels], hi[labels])), 0.0, 1.0)
    return DifficultyTargets(raw=raw, transformed=transformed, lo=lo, hi=hi, weights=weights)


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """Settings of :func:`generate_set` (``jaxdd generate``)."""

    ipc: int
    guidance: str = "none"
    target: Any = "real"
    curricula: int = 1
    scale: float | None = None  # None: DAG_SCALE / ACSConfig.scale
    window: tuple[int, int] | None = None
    pool_factor: int = 1
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG
    deviation: float | None = None  # ACS deviation weight (None: ACSConfig's default)
    disc_epochs: int | None = None  # ACS discriminator epochs (None: ACSConfig's default)
    disc_model: str | None = None  # ACS discriminator network (None: ACSConfig's default, convnet)
    batch_size: int = 100
    pad_to_batch: bool = False  # pad sampling batches to batch_size: one compilation for every set size
    seed: int = 0

    def __post_init__(self):
        if self.window is not None:
            object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        if self.guidance not in GUIDANCES:
            raise ValueError(f"unknown guidance {self.guidance!r}; choose one of {', '.join(GUIDANCES)}")
        if self.ipc < 1 or self.pool_factor < 1 or self.curricula < 1:
            raise ValueError(f"need ipc, pool_factor and curricula >= 1, got {self.ipc}, {self.pool_factor}, "
                             f"{self.curricula}")
        if self.guidance != "acs" and self.curricula != 1:
            raise ValueError(f"--curricula applies to --guidance acs only (got {self.curricula} with {self.guidance})")
        if self.guidance == "acs" and self.pool_factor != 1:
            raise ValueError("ACS orders its output by curriculum; --pool-factor (generate a pool, then DGS) applies "
                             "to --guidance none|dag")
        if self.scale is not None and self.scale < 0:
            raise ValueError(f"--scale must be >= 0, got {self.scale}")
        window_steps(self.steps, self.window)

    def acs_config(self) -> ACSConfig:
        kw = {k: v for k, v in {"scale": self.scale, "deviation": self.deviation,
                                "disc_epochs": self.disc_epochs, "discriminator": self.disc_model}.items()
              if v is not None}
        return ACSConfig(ipc=self.ipc, curricula=self.curricula, steps=self.steps, cfg_scale=self.cfg_scale,
                         window=self.window, batch_size=self.batch_size, pad_to_batch=self.pad_to_batch, **kw)


def check_inputs(prior: DiffusionPrior, ds: Dataset, config: GenerateConfig, where: str = "prior") -> Any:
    """Every check that can fail before work starts; returns the loaded target."""
    check_compatible(prior, ds, where=where)
    target = load_target(config.target, NUM_BINS, ds.num_classes)
    if config.guidance == "acs":
        config.acs_config()  # K divides IPC, ...
    return target


def difficulty_figure(weights: np.ndarray, achieved: np.ndarray, class_names, title: str = ""):
    """Per class: target (bars) vs achieved (step line) histograms of transformed difficulty."""
    from jaxdd.utils.images import pyplot

    plt = pyplot()

    c = len(weights)
    cols = min(5, c)
    rows = -(-c // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    centres = (np.arange(weights.shape[1]) + 0.5) / weights.shape[1]
    for i, ax in enumerate(axes.ravel()):
        if i >= c:
            ax.axis("off")
            continue
        ax.bar(centres, weights[i], width=1 / weights.shape[1], alpha=0.4, label="target")
        ax.step(centres, achieved[i], where="mid", color="C3", label="achieved")
        ax.set_title(str(class_names[i]), fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.supxlabel("transformed difficulty T(1 - p(y|x))", fontsize=8)
    return fig


def generate_set(prior: DiffusionPrior, params: Any, ds: Dataset, config: GenerateConfig, out: str | Path, *,
                 classifier=None, classifier_dir: str | Path | None = None, classifier_model: str = "convnet",
                 classifier_epochs: int | None = None, prior_path: str = "", dataset_id: str | None = None,
                 resume: bool = False, progress: bool = True, stop_after: int | None = None,
                 real_scores: np.ndarray | None = None) -> dict:
    """Generate IPC images per class (``config.guidance`` none | dag | acs; with a pool and DGS when
    ``pool_factor > 1``) and write to ``out``: ``distilled.npz/json`` (for ``jaxdd eval``), ``pool/``
    (for ``jaxdd sample``), ``samples.png``, ``difficulty.png`` (target vs achieved per class),
    ``generate.json`` (target-vs-achieved KL, :func:`set_metrics`, seconds per image); ACS also
    ``checkpoints/`` (``resume`` continues a killed run).
    ``classifier``: a DifficultyClassifier, else loaded from / trained into ``classifier_dir``
    (default ``out/classifier``; ``classifier_model`` for ``classifier_epochs``, default 5).
    ``dataset_id``: how the outputs name the dataset (what ``jaxdd eval`` loads; default ``ds.name``).
    ``real_scores``: the classifier's difficulty of every ``ds.x_train`` image (scored here when None).
    Returns the summary written to ``generate.json``."""
    from jaxdd.difficulty.classifier import DEFAULT_EPOCHS, load_or_train_classifier
    from jaxdd.train import TrainConfig
    from jaxdd.sample.pool import make_pool
    from jaxdd.utils.images import save_class_grid, save_figure
    from jaxdd.utils.io import write_json

    target = check_inputs(prior, ds, config, where=f"prior {prior_path}".strip())
    if resume and config.guidance != "acs":
        raise ValueError("--resume continues an ACS run (its curricula are checkpointed); none/dag runs are "
                         "one pass: run them again")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.guidance == "acs" and not resume and has_run(out / "checkpoints"):
        raise ValueError(f"{out} already holds an ACS run: pass --resume to continue it, or choose another --out")
    start = time.time()
    key = jax.random.key(config.seed)
    k_clf, k_target, k_gen, k_sel = (jax.random.fold_in(key, i) for i in range(4))
    if classifier is None:
        classifier, _ = load_or_train_classifier(
            classifier_dir or out / "classifier", k_clf, ds, model=classifier_model,
            config=TrainConfig(epochs=DEFAULT_EPOCHS if classifier_epochs is None else classifier_epochs),
            progress=progress)
    if real_scores is None:
        real_scores = classifier.scores(ds.x_train, ds.y_train, progress=progress, desc="score real")
    elif len(real_scores) != len(ds.y_train):
        raise ValueError(f"real_scores has {len(real_scores)} entries, the training split {len(ds.y_train)}: pass "
                         "the classifier's scores of every training image, or None")
    c, n = ds.num_classes, config.ipc * config.pool_factor
    labels = np.repeat(np.arange(c), n).astype(np.int32)
    draw = difficulty_targets(k_target, labels, c, target, real_scores, ds.y_train)
    info: dict = {}

    t0 = time.time()
    if config.guidance == "acs":
        acs = ACS(prior, config.acs_config(), dataset=ds.name)
        curricula = []
        state = run_acs(acs, params, k_gen, out / "checkpoints", resume=resume, stop_after=stop_after,
                        progress=progress, on_curriculum=curricula.append)
        images, labels, _ = acs.output(state)
        info = {"acs": dataclasses.asdict(acs.config), "disc_loss": np.asarray(state.disc_loss).tolist(),
                "adv_loss": np.asarray(state.adv_loss).tolist(), "curricula_run_now": curricula}
        if stop_after is not None and int(state.curriculum) < acs.config.curricula:
            return {"stopped_after": int(state.curriculum)}
    else:
        terms, aux, sample_aux = (), None, None
        if config.guidance == "dag":
            fn = ClassifierLogits(classifier.net, prior, tuple(map(float, ds.mean)), tuple(map(float, ds.std)))
            terms = (difficulty_term(fn, DAG_SCALE if config.scale is None else config.scale),)
            aux, sample_aux = {"difficulty": classifier.variables}, {"difficulty": draw.raw}
        images = generate(prior, params, labels, k_gen, steps=config.steps, cfg_scale=config.cfg_scale,
                          guidance=terms, window=config.window, aux=aux, sample_aux=sample_aux,
                          batch_size=config.batch_size, progress="generate" if progress else None,
                          pad_to_batch=config.pad_to_batch)
    gen_seconds = time.time() - t0
    images = np.asarray(to_dataset_space(prior, images, ds.mean, ds.std), np.float32)

    scores = classifier.scores(images, labels, progress=progress, desc="score samples")
    source = {"kind": "prior", "prior": prior_path, "guidance": config.guidance, "steps": config.steps,
              "cfg_scale": config.cfg_scale, "seed": config.seed}
    record = {"command": "jaxdd generate", **{k: v for k, v in dataclasses.asdict(config).items()}}
    pool = make_pool(images, labels, c, dataset_id or ds.name, ds.mean, ds.std, seed=config.seed,
                     source_index=np.arange(len(labels)), sources=[source], config=record)
    pool.save(out / "pool")
    if config.pool_factor > 1:
        sel = dgs_select(k_sel, scores, labels, config.ipc, target, real_scores=real_scores, real_labels=ds.y_train,
                         num_classes=c, class_names=ds.class_names)
        indices = sel.indices.reshape(-1)
    else:
        indices = np.arange(len(labels))
    distilled = pool.to_distilled(indices, config={"method": f"generate-{config.guidance}", **record})
    distilled.save(out)

    chosen_labels, chosen_scores = labels[indices], scores[indices]
    achieved_t = np.asarray(log_transform(chosen_scores, draw.lo[chosen_labels], draw.hi[chosen_labels]))
    achieved = class_histograms(achieved_t, chosen_labels, c)
    kl = histogram_kl(draw.weights, achieved_t, chosen_labels).tolist()
    view = lambda x: np.clip(x * ds.std + ds.mean, 0, 1)  # noqa: E731
    save_class_grid(out / "samples.png", view(distilled.images), distilled.labels, c, min(config.ipc, 10))
    save_figure(out / "difficulty.png", difficulty_figure(
        draw.weights, achieved, ds.class_names, f"{ds.name} IPC {config.ipc}, {config.guidance}, target "
        f"{config.target if isinstance(config.target, str) else 'weights'}"))
    rows = [{"class": k, "name": ds.class_names[k], "target_mean_d": float(draw.raw[labels == k].mean()),
             "achieved_mean_d": float(chosen_scores[chosen_labels == k].mean()), "kl_target_achieved": kl[k]}
            for k in range(c)]
    summary = {"config": record, "prior": prior_path, "per_class": rows, "kl_mean": float(np.mean(kl)),
               "classifier": classifier.meta, "generated": int(len(labels)),
               "seconds_generate": round(gen_seconds, 2),
               "seconds_per_image": round(gen_seconds / max(len(labels), 1), 4),
               **set_metrics(classifier, distilled.images, distilled.labels, ds),
               "seconds": round(time.time() - start, 1), **info}
    if config.guidance == "dag":
        dag_mask = np.isin(np.arange(len(labels)), indices)
        summary["dag_abs_error"] = float(np.mean(np.abs(scores - draw.raw)[dag_mask]))
    write_json(out / "generate.json", summary)
    return summary
