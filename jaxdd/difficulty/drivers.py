"""Scoring whole datasets: stream batches through one or several models, and the ensemble runner.

* :func:`score_models` scores every example of ``(x, y)`` with M given models (variables with a
  leading model axis, or one model's variables) in batches of ``batch_size``; the images may be a
  NumPy array or memmap larger than device memory: only one batch is on the device at a time.
  With ``mesh`` each batch is split over the ``data`` axis (parameters replicated).
* :func:`ensemble_scores` trains K independently seeded models together (``jaxdd.train``, vmapped)
  for E epochs, scores them at the chosen epochs (0 = at initialisation) and averages over models
  and epochs (GraNd/EL2N protocol of Paul et al., 2021: ~10 models, early epochs). The forgetting
  score instead evaluates all training examples after every epoch and counts correct -> incorrect
  transitions per model (Toneva et al. count per minibatch presentation; per epoch is our choice).
* :func:`load_model` reads a trained model from a ``jaxdd.utils.checkpoint`` folder.

Networks are scored in inference mode (BatchNorm with running statistics; see
:mod:`jaxdd.difficulty.gradnorm`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdd.difficulty import scores as S
from jaxdd.difficulty.gradnorm import ModelLike
from jaxdd.difficulty.registry import SCORES, check_score, get_score  # noqa: F401
from jaxdd.models.adapters import as_network, bind
from jaxdd.models.network import Network, Variables
from jaxdd.utils.distributed import to_host
from jaxdd.utils.labels import hard_labels
from jaxdd.utils.mesh import replicate, shard_batch


def batch_scores(net: ModelLike, variables: Variables, x: jax.Array, y: jax.Array, score: str,
                 method: str = "auto") -> jax.Array:
    """Score one batch with one model (no model axis): (B,). ``score`` a registered name
    (:data:`SCORES`) other than the training-time ones (forgetting). ``net`` is a jaxdd
    ``Network``, a ``Model`` or a plain ``apply_fn(params, x) -> logits``. Pure and jittable."""
    entry = get_score(score)
    if entry.inputs == "training":
        raise ValueError(f"the {score} score counts events during training: use ensemble_scores "
                         f"(jaxdd score --score {score} --epochs E), not a fixed model")
    if entry.inputs == "model":
        return entry.fn(net, variables, x, y, method)
    bound = bind(net, variables)
    return entry.fn(bound.apply(bound.params, x), y)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _score_batch_stacked(net: ModelLike, score: str, method: str, variables: Variables, xb, yb):
    """(M, B) scores of M stacked models; models run one after another (``lax.map``) to keep
    the memory of one model's backward pass."""
    return jax.lax.map(lambda v: batch_scores(net, v, xb, yb, score, method), variables)


def is_stacked(net: Network, variables: Variables) -> bool:
    """True when ``variables`` carry a leading model axis (compared with ``net.init``)."""
    ref = jax.eval_shape(net.init, jax.random.key(0))["params"]
    ref_shapes = [tuple(a.shape) for a in jax.tree.leaves(ref)]
    got_shapes = [tuple(np.shape(a)) for a in jax.tree.leaves(variables.get("params", {}))]
    if got_shapes == ref_shapes and jax.tree.structure(ref) == jax.tree.structure(variables["params"]):
        return False
    if (len(got_shapes) == len(ref_shapes) and all(g[1:] == r for g, r in zip(got_shapes, ref_shapes))
            and len({g[0] for g in got_shapes}) == 1):
        return True
    raise ValueError(f"variables do not belong to network {net.name!r}: their parameter shapes differ from "
                     "net.init's (with or without a leading model axis); pass the network they were made for")


def _check_xy(net: ModelLike, x, y) -> None:
    if isinstance(net, Network) and (np.ndim(x) != 4 or tuple(np.shape(x)[1:]) != tuple(net.input_shape)):
        raise ValueError(f"images must have shape (N, {', '.join(map(str, net.input_shape))}) for network "
                         f"{net.name!r}, got {np.shape(x)}")
    if np.shape(y)[:1] != np.shape(x)[:1] or np.ndim(y) not in (1, 2):
        raise ValueError(f"need one label (or soft-label row) per image: images {np.shape(x)}, labels {np.shape(y)}")


def score_models(net: ModelLike, variables: Variables, x: Any, y: Any, score: str, *, batch_size: int = 256,
                 mesh: Mesh | None = None, method: str = "auto", progress: bool = True,
                 desc: str | None = None, stacked: bool | None = None) -> np.ndarray:
    """Scores (M, N) of every example under each of M models (M = 1 for unstacked variables).

    ``net``: a jaxdd ``Network`` (a leading model axis of ``variables`` is detected), or a
    ``Model`` / plain ``apply_fn(params, x) -> logits`` (``variables`` its params; pass
    ``stacked=True`` when they carry a leading model axis).

    ``x`` (N, H, W, C) and ``y`` (N,) or (N, C) stay on the host and are streamed in batches
    (the last one zero-padded so there is one compilation). With ``mesh`` the batch size is
    rounded up to a multiple of the device count and each batch is sharded over it."""
    from tqdm.auto import tqdm

    check_score(score)
    _check_xy(net, x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if stacked is None:
        stacked = is_stacked(net, variables) if isinstance(net, Network) else False
    if not stacked:
        variables = jax.tree.map(lambda a: a[None], variables)
    n = int(np.shape(x)[0])
    b = min(batch_size, n)
    if mesh is not None:
        b = -(-b // mesh.size) * mesh.size
    variables = replicate(variables, mesh)
    out = []
    starts = range(0, n, b)
    for i in tqdm(starts, desc=desc or f"score {score}", disable=not progress, leave=False, dynamic_ncols=True):
        xb, yb = np.asarray(x[i:i + b], np.float32), np.asarray(y[i:i + b])
        k = len(xb)
        if k < b:
            xb = np.concatenate([xb, np.zeros((b - k, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((b - k, *yb.shape[1:]), yb.dtype)])
        xb, yb = shard_batch((jnp.asarray(xb), jnp.asarray(yb)), mesh)
        out.append(to_host(_score_batch_stacked(net, score, method, variables, xb, yb))[:, :k])
    return np.concatenate(out, axis=1)


# ------------------------------------------------------------------------------ ensemble runner

@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    """``scores`` (N,): the mean of ``raw`` over epochs and models; ``raw`` (T, M, N) per scored
    epoch and model (forgetting: T = 1, the counts after the last epoch); ``epochs`` the scored
    epochs; ``train_acc`` (E, M) training accuracy per epoch; ``config`` what made them."""

    scores: np.ndarray
    raw: np.ndarray
    epochs: tuple[int, ...]
    train_acc: np.ndarray
    config: dict


def _score_epochs(epochs: int, score_epochs: Sequence[int] | None, score: str) -> tuple[int, ...]:
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if score == "forgetting":
        if epochs < 1:
            raise ValueError("the forgetting score needs at least one training epoch (--epochs >= 1)")
        return (epochs,)
    chosen = (epochs,) if score_epochs is None else tuple(sorted(set(int(e) for e in score_epochs)))
    bad = [e for e in chosen if not 0 <= e <= epochs]
    if bad or not chosen:
        raise ValueError(f"score epochs {list(chosen)} must lie in [0, epochs={epochs}] (0 = at initialisation)")
    return chosen


def ensemble_scores(net: Any, x: Any, y: Any, key: jax.Array, *, score: str = "el2n", num_models: int = 4,
                    epochs: int = 10, score_epochs: Sequence[int] | None = None, train_config: Any = None,
                    batch_size: int = 256, mesh: Mesh | None = None, method: str = "auto",
                    progress: bool = True, checkpoint_dir: str | None = None) -> EnsembleResult:
    """Train ``num_models`` seeded models on ``(x, y)`` for ``epochs`` and score them.

    ``score_epochs`` (default ``(epochs,)``; 0 = before training) are the epochs at which all
    examples are scored; the result averages over models and scored epochs. ``train_config`` is a
    :class:`jaxdd.train.TrainConfig` (default: DC SGD — lr 0.01, momentum 0.9, weight decay 5e-4,
    batch 256 — without lr decay; its ``epochs`` is replaced by ``epochs``). Training data must fit
    in memory; scoring streams it. With ``checkpoint_dir`` the models, the scores so far and the
    forgetting tracker are saved after every epoch (``jaxdd.utils.checkpoint``) and a rerun with the
    same arguments resumes from the latest epoch with identical results.

    ``net``: a jaxdd ``Network`` or an own model that can initialise fresh networks (a ``Model``
    with ``init``, a ``flax.linen`` module or an nnx constructor ``lambda rngs: ...``), built for
    the images of ``x`` with ``jaxdd.models.adapters.as_network``.
    """
    from jaxdd.train import TrainConfig, Trainer, fit, predict_logits
    from jaxdd.utils.run_loop import RunConfig, run_loop

    if not isinstance(net, Network):
        net = as_network(net, np.shape(x)[1:])

    check_score(score)
    _check_xy(net, x, y)
    if not isinstance(num_models, int) or num_models < 1:
        raise ValueError(f"num_models must be a positive integer, got {num_models!r}")
    chosen = _score_epochs(epochs, score_epochs, score)
    cfg = train_config or TrainConfig(schedule="constant")
    cfg = dataclasses.replace(cfg, epochs=epochs)
    trainer = Trainer(net, cfg, mesh=mesh)
    k_init, k_train = jax.random.split(key)
    y_np = np.asarray(y)
    n = len(y_np)
    hard = hard_labels(y_np)
    config = {"score": score, "model": net.name, "num_models": num_models, "epochs": epochs,
              "score_epochs": list(chosen), "train": dataclasses.asdict(cfg), "batch_size": batch_size,
              "method": method, "devices": 1 if mesh is None else mesh.size, "num_examples": n}
    carry = {"state": trainer.init(k_init, num_models),
             "tracker": jax.vmap(lambda _: S.forgetting_init(n))(jnp.arange(num_models)),
             "raw": np.full((len(chosen), num_models, n), np.nan, np.float32),
             "acc": np.zeros((epochs, num_models), np.float32)}

    def record(epoch: int, carry: dict, metrics=None) -> dict:
        """``carry`` with the scores (or the forgetting events) of its models after ``epoch``."""
        carry = {**carry, "raw": np.array(carry["raw"]), "acc": np.array(carry["acc"])}  # writable copies
        st = carry["state"]
        if metrics is not None:
            carry["acc"][epoch - 1] = np.asarray(metrics["acc"])
        if score == "forgetting":
            if epoch > 0:  # events count from the first trained epoch on (chance hits at init do not)
                logits = predict_logits(net, st.variables, x, batch_size=batch_size, mesh=mesh)  # (M, N, C)
                correct = jnp.asarray(np.asarray(logits.argmax(-1)) == hard[None])
                carry["tracker"] = jax.vmap(S.forgetting_update)(carry["tracker"], correct)
        elif epoch in chosen:
            carry["raw"][chosen.index(epoch)] = score_models(
                net, st.variables, x, y, score, batch_size=batch_size, mesh=mesh, method=method,
                progress=progress, desc=f"score {score} @ epoch {epoch}")
        return carry

    x_fit, y_fit = replicate((jnp.asarray(x, jnp.float32), jnp.asarray(y)), mesh)  # on the device once

    def step(carry: dict, e: int) -> tuple[dict, dict]:
        """Epoch ``e + 1`` of training (``jaxdd.train.fit``'s keys), then its scores."""
        st, hist = fit(trainer, carry["state"], x_fit, y_fit, k_train, epochs=e + 1, progress=False)
        return record(e + 1, {**carry, "state": st}, hist[-1]), {}

    # a rerun with the same arguments resumes from the latest epoch (no --resume flag)
    loop = RunConfig(steps=epochs, checkpoint_dir=checkpoint_dir, resume=True, checkpoint_every=1, record=config,
                     extendable=False, not_extendable="the score is an average over the chosen epochs",
                     unit="epoch", kind="a scoring run", desc=f"train {num_models} models", progress=progress)
    carry = run_loop(step, carry, loop, on_start=lambda c: record(0, c)).state
    if score == "forgetting":
        stacked = np.asarray(jax.vmap(S.forgetting_scores)(carry["tracker"]))[None]  # (1, M, N)
    else:
        stacked = np.asarray(carry["raw"])  # (T, M, N)
    return EnsembleResult(scores=stacked.mean(axis=(0, 1)), raw=stacked, epochs=chosen,
                          train_acc=np.asarray(carry["acc"]), config=config)


def load_model(net: Network, checkpoint: str, step: int | None = None) -> tuple[Variables, dict]:
    """Variables stored in a ``jaxdd.utils.checkpoint`` folder: either one network's variables
    (``{"params": ..., ["batch_stats": ...]}``) or a ``jaxdd.train.TrainState`` of M models
    (returned with its leading model axis). Returns (variables, checkpoint metadata)."""
    from jaxdd.train import Trainer
    from jaxdd.utils.checkpoint import CheckpointError, Checkpointer

    with Checkpointer(checkpoint) as ckpt:
        try:
            _, variables, meta = ckpt.restore(net.init(jax.random.key(0)), step)
            return variables, meta
        except CheckpointError as err:
            first = err
        s = step if step is not None else ckpt.latest_step()
        leaves = ckpt._read_record(s)["leaves"]
        m = int(leaves[0]["shape"][0]) if leaves and leaves[0]["shape"] else 1
        try:
            _, state, meta = ckpt.restore(Trainer(net).init(jax.random.key(0), m), s)
        except CheckpointError:
            raise ValueError(f"{checkpoint} holds neither the variables of {net.name!r} nor a training state of "
                             f"it ({first}); pass the model (and dataset) the checkpoint was trained with") from None
        return state.variables, meta
