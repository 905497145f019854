"""Dataset distillation: matching losses, SDC, methods as ``init``/``update`` pairs, the driver.

Losses (``jaxdd.distill.losses``, pure and jittable, usable from your own code with a jaxdd
``Network`` or any ``apply_fn(params, x)`` / ``embed_fn``): ``gradient_distance`` /
``gradient_match_loss`` (DC), ``distribution_match_loss`` (DM); SDC's ``sdc_penalty`` and
``difficulty_weights`` come from ``jaxdd.difficulty``.

Running a method: ``jaxdd distill --method NAME ...`` on the command line, or in Python::

    from jaxdd.distill import RealData, build_method, distill
    real = RealData.from_dataset(dataset)                 # or dataset.subset(kept) / weights=...
    method = build_method("dsa", net, ipc=10, sdc=0.01)    # config = the authors' defaults + overrides
    result = distill(method, real, dataset, out="runs/dsa", iterations=200)

``net`` is a jaxdd ``Network`` or your own model (a ``flax.linen`` module, an nnx constructor
``lambda rngs: ...``, a ``jaxdd.models.adapters.Model`` with ``init``; then pass
``dataset=dataset`` to ``build_method`` for the shapes).

Adding a method (trajectory matching, LD3M, ...)
------------------------------------------------
A method is an object with ``name``, ``config``, ``network``, ``eval_preset``, ``extendable``,
``for_dataset`` and three pure functions (the :class:`Method` protocol declares them all); the
driver owns everything else on the one run loop (:mod:`jaxdd.utils.run_loop`: jit, progress bar,
periodic evaluation, orbax checkpoints and bit-identical resume, the NaN guard, PNG grids,
synthetic-set difficulty tracking, the final ``DistilledSet`` and its evaluation table)::

    method = method.for_dataset(dataset)           # checks it fits the dataset; itself or a copy set up for it
    state = method.init(key, real)                 # -> state pytree (not jitted by the driver)
    state, metrics = method.update(state, real)    # one distillation iteration; pure and jittable
    images, labels, lr = method.synthetic(state)   # the current synthetic set (lr: learned or None)

* ``real`` is a :class:`RealData` pytree: all real training images (N, H, W, Ch), labels, a
  ``ClassIndex`` and optional per-example difficulty weights (N,); ``real.sample(key, n, mesh)``
  draws ``n`` distinct images of every class as (C, n, ...) plus their weights.
* ``state`` is any pytree of arrays (NamedTuple or ``flax.struct.dataclass``) holding everything
  the method needs to continue: the learnable tensors (images, latents, soft labels, lr), the
  optimiser state and **the PRNG key** (a typed ``jax.random.key``, split inside ``update``).
  No randomness may come from elsewhere: the driver checkpoints the state and resumes
  bit-identically from it. ``update`` must not depend on the iteration number except through
  the state (keep a ``step`` counter in it if the schedule needs one, e.g. DATM's window).
* ``metrics`` is a dict of scalar arrays; ``"loss"`` is shown in the progress bar. All metrics go
  into ``history.json``.
* ``synthetic`` returns images (N, H, W, Ch) normalised like the dataset, labels (N,) int32 or
  (N, C) soft-label rows, and a learned learning rate (scalar) or None. It must be cheap enough to
  call at every evaluation / checkpoint.
* ``config`` is a frozen dataclass with at least ``ipc``, ``iterations`` (the authors' default),
  ``lr_img`` and ``sdc``, validated in ``__post_init__``; it is recorded in every output.
* ``eval_preset`` names the evaluation preset that fits the method's sets (``dc``, ``dc-dsa``,
  ``mtt``); ``extendable = False`` on a method whose ``update`` depends on the total
  ``config.iterations`` (``--resume`` then refuses a changed ``--iterations``).
* The method object itself must be hashable, and equal objects must compute the same update: the
  driver jits ``update`` with the method as a static argument, so equal methods share one
  compiled step (a frozen dataclass of network, config and mesh does this).
* The optimiser of the synthetic images is an ``optax.GradientTransformation`` (the built-in
  methods take it as ``image_tx``; an :class:`~jaxdd.distill.base.ImageOptimizer` adds a keyed
  ``start``): LD3M (:mod:`jaxdd.distill.ld3m`) is DM / DC / DSA / MTT with an optimiser whose
  learnables are the latents of a diffusion prior.
* The driver's NaN guard checks every floating leaf of the state after each update, so any
  non-finite learnable tensor stops the run with the last good checkpoint kept.

Register the method so ``jaxdd distill --method NAME`` and ``build_method`` find it::

    @register_method("mtt", MTTConfig, "trajectory matching, Cazenavette et al. CVPR 2022")
    def _build(network, config, mesh=None):
        return MTT(network, config, mesh)

and import its module in this file (below) so registration runs on ``import jaxdd.distill``.
CLI flags ``--ipc``, ``--iterations``, ``--sdc``, ``--init``, ``--lr-img`` (and ``--real-batch-size``
for ``batch_real``) map to config fields of that name when the config has them; any other field is set with
``--set FIELD=VALUE`` (parsed as JSON, else as a string).
"""

from jaxdd.distill.base import (ImageOptimizer, Method, MethodSpec, RealData, available_methods, build_method,
                                config_dict, image_optimizer, init_images, method_config, method_spec,
                                register_method)
from jaxdd.distill import losses
from jaxdd.distill.methods import (DCConfig, DMConfig, DSAConfig, DistributionMatching, GradientMatching,
                                   ImageState, MatchingConfig, dc_loops)
from jaxdd.distill.driver import DistillConfig, DistillResult, distill, synthetic_difficulty
from jaxdd.distill import datm, mtt  # noqa: E402,F401  (registers the trajectory-matching methods)
from jaxdd.distill import ld3m  # noqa: E402,F401  (registers ld3m)

__all__ = [
    "ImageOptimizer", "Method", "MethodSpec", "RealData", "image_optimizer", "available_methods", "build_method", "config_dict", "init_images",
    "method_config", "method_spec", "register_method", "losses",
    "DCConfig", "DMConfig", "DSAConfig", "DistributionMatching", "GradientMatching", "ImageState",
    "MatchingConfig", "dc_loops",
    "DistillConfig", "DistillResult", "distill", "synthetic_difficulty",
]
