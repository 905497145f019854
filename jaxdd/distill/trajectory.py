"""The trajectory-matching loss (MTT / DATM) and its three memory modes, as pure jittable functions.

Source: Cazenavette et al., "Dataset Distillation by Matching Training Trajectories" (CVPR 2022),
``distill.py`` of the authors' code; the constant-memory gradient follows the idea of Cui et al.,
"Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory" (TESLA, ICML 2023).

**Student trajectory.** From expert parameters ``θ_0 = θ*_t`` the student takes ``N`` (syn_steps)
SGD steps with the learnable step size ``α`` on mini-batches of the synthetic set::

    θ_{i+1} = θ_i − α ∇_θ ℓ(f_{θ_i}(A_i(x̃[b_i])), ỹ[b_i]),      i = 0 … N−1

``b_i`` are rows of :class:`StudentPlan` (epochs of random permutations cut into batches of
``batch_syn``, default the whole set, as the reference); ``A_i`` is per-sample DSA (one op per
step, its own parameters per image: the reference ``DiffAugment`` in MTT) with key
``plan.aug_keys[i]``, or the identity. ``ℓ`` is the mean cross-entropy on integer labels or soft
cross-entropy on probability rows (DATM), with the network in train mode (BatchNorm uses batch
statistics, as the reference ``student_net.train()``).

**Loss** (the reference ``param_loss / param_dist``; the 1/num_params factors cancel)::

    L = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²  +  λ · (1/N) Σ_i P(θ_i, A_i(x̃[b_i]), ỹ[b_i])

The second term is SDC on trajectories (Wang et al. 2024, arXiv 2408.12483): the gradient-norm penalty of
the synthetic batch at every student state, :func:`jaxdd.difficulty.sdc.sdc_penalty` (``mean`` per
example or ``batch`` gradient norm, optionally squared) in the student's train mode (BatchNorm on
the batch's statistics, like the step's loss), averaged over the steps; ``λ = 0`` drops it.

**Memory modes** (all give the same value and the same gradient w.r.t. images, soft labels and α):

* ``unroll``: ``lax.scan`` over the steps, plain reverse-mode autodiff. Keeps every step's
  activations: memory ``O(N · (activations + P))``.
* ``remat``: the same scan with the step body under ``jax.checkpoint``: the scan keeps only the
  per-step parameters ``θ_i`` and recomputes one step's activations at a time in the backward
  pass. Memory ``O(N · P + one step)``.
* ``tesla``: an explicit adjoint (``jax.custom_vjp``). The forward pass runs the steps without
  any autodiff graph; the backward pass walks the steps in reverse, rebuilding one step's graph at
  a time and propagating the parameter adjoint ``λ_i = ∂L/∂θ_i``::

      λ_N = ∂L/∂θ_N,   λ_i = λ_{i+1} − α H_i λ_{i+1} + (λ/N) ∂P_i/∂θ_i      (H_i = ∇²_θ ℓ_i(θ_i))
      ∂L/∂x̃ += −α (∂g_i/∂x̃)ᵀ λ_{i+1} + (λ/N) ∂P_i/∂x̃,   ∂L/∂α += −g_iᵀ λ_{i+1}

  (one ``jax.vjp`` of the step per i; the Hessian-vector products make the gradient exact,
  including the dependence of later steps on earlier batches through ``θ_i``, which the TESLA
  paper's derivation drops). The ``θ_i`` are needed in reverse order. ``checkpoint_every=K``
  stores ``θ`` only at every K-th step and recomputes the K states of a segment (forward, no graph)
  just before walking it backwards: memory ``O((⌈N/K⌉ + K) · P + one step)``, compute about one
  extra forward pass. ``K = 1`` stores all ``N`` states (no recomputation); the default
  ``"sqrt"`` uses ``K = ⌈√N⌉``, i.e. ``O(√N · P)``. Activation memory is independent of N in
  both ``remat`` and ``tesla``; parameter storage is the only part that grows (linearly for
  ``remat``, as √N for ``tesla``). Offloading the stored states to host memory is not implemented.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdd.augment import dsa
from jaxdd.difficulty.gradnorm import ModelLike
from jaxdd.difficulty.sdc import SDC_MODES, sdc_penalty
from jaxdd.models import Network
from jaxdd.models.adapters import bind
from jaxdd.train import epoch_batches
from jaxdd.utils.labels import cross_entropy, is_soft
from jaxdd.utils.mesh import DATA_AXIS

MEMORY_MODES = ("unroll", "remat", "tesla")
_TINY = 1e-30  # floor of the normaliser ‖θ*_t − θ*_{t+M}‖² (identical start and target)


# ------------------------------------------------------------------------------ plans and distances

class StudentPlan(NamedTuple):
    """What the N student steps read: ``batches`` (N, B) int32 rows of the synthetic set and
    ``aug_keys`` (N,) per-step DSA keys."""

    batches: jax.Array
    aug_keys: jax.Array


def student_plan(key: jax.Array, num_images: int, syn_steps: int, batch_syn: int | None = None) -> StudentPlan:
    """Mini-batches for ``syn_steps`` student steps over ``num_images`` synthetic images.

    Epoch e is ``jaxdd.train.epoch_batches(split(k_perm, E)[e], n, B)`` (a random permutation cut
    into batches of ``B = min(batch_syn, n)``, the last one completed with the first images of the
    same permutation so shapes stay static; the reference pops a smaller last chunk instead); epochs
    are concatenated and the first ``syn_steps`` batches kept. ``k_perm, k_aug = split(key)`` and
    step i augments with ``split(k_aug, syn_steps)[i]``. ``batch_syn=None`` uses the whole set.
    """
    if not isinstance(syn_steps, int) or isinstance(syn_steps, bool) or syn_steps < 1:
        raise ValueError(f"syn_steps (student steps) must be a positive integer, got {syn_steps!r}")
    if num_images < 1:
        raise ValueError("the synthetic set is empty: trajectory matching needs at least one image")
    b = num_images if batch_syn is None else int(batch_syn)
    if b < 1:
        raise ValueError(f"batch_syn must be a positive integer or None (the whole set), got {batch_syn!r}")
    b = min(b, num_images)
    per_epoch = -(-num_images // b)
    epochs = -(-syn_steps // per_epoch)
    k_perm, k_aug = jax.random.split(key)
    rows = jax.vmap(lambda k: epoch_batches(k, num_images, b))(jax.random.split(k_perm, epochs))
    return StudentPlan(rows.reshape(-1, b)[:syn_steps].astype(jnp.int32), jax.random.split(k_aug, syn_steps))


def param_sq_distance(a: Any, b: Any) -> jax.Array:
    """``‖vec(a) − vec(b)‖²`` over all leaves of two parameter pytrees of the same structure."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        raise ValueError("parameter pytrees differ in structure or shapes: the expert buffer does not belong to "
                         "this network (create the network the buffer was trained with)")
    return sum((jnp.sum(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32))) for x, y in zip(la, lb)),
               jnp.zeros((), jnp.float32))


def normalized_param_loss(student: Any, start: Any, target: Any) -> jax.Array:
    """``‖θ̂ − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²`` (MTT's normalised parameter distance)."""
    return param_sq_distance(student, target) / jnp.maximum(param_sq_distance(start, target), _TINY)


# ------------------------------------------------------------------------------------- one step

@dataclasses.dataclass(frozen=True)
class StudentStep:
    """One student SGD step, ``(θ_i, z, consts, (b_i, key_i)) -> (θ_{i+1}, P_i)``.

    ``z`` holds the differentiable inputs ``{"images", "lr", ["labels"]}`` (``labels`` there only when
    soft); ``consts`` holds ``{"variables": non-parameter collections, ["labels"]: int labels}``.
    ``P_i`` is the SDC penalty at ``θ_i`` (0 when ``sdc_mode`` is None). Hashable (a static
    argument of the custom VJP).
    """

    net: ModelLike  # a jaxdd Network (train mode) or a plain model (used as given)
    dsa_strategy: str | None = None
    sdc_mode: str | None = None
    sdc_squared: bool = False
    mesh: Mesh | None = None

    def batch(self, z: dict, consts: dict, idx: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = z["images"][idx]
        y = (z["labels"] if "labels" in z else consts["labels"])[idx]
        if self.mesh is not None:
            x = jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P(DATA_AXIS)))
        if self.dsa_strategy:
            x = dsa(key, x, self.dsa_strategy, siamese=False)
        return x, y

    def variables(self, params: Any, consts: dict) -> Any:
        """What the model takes: a Network's variables, or the params of a plain model."""
        return {**consts["variables"], "params": params} if isinstance(self.net, Network) else params

    def loss(self, params: Any, consts: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        if isinstance(self.net, Network):
            logits, _ = self.net.apply({**consts["variables"], "params": params}, x, train=True)
        else:
            logits = bind(self.net, params).apply(params, x)
        return jnp.mean(cross_entropy(logits, y))

    def __call__(self, params: Any, z: dict, consts: dict, inp: tuple[jax.Array, jax.Array]):
        idx, key = inp
        x, y = self.batch(z, consts, idx, key)
        grads = jax.grad(self.loss)(params, consts, x, y)
        new = jax.tree.map(lambda p, g: p - z["lr"].astype(p.dtype) * g, params, grads)
        if self.sdc_mode is None:
            return new, jnp.zeros((), jnp.float32)
        # the student's network state: train mode (BatchNorm on this batch's statistics)
        pen = sdc_penalty(self.net, self.variables(params, consts), x, y, self.sdc_mode, self.sdc_squared, train=True)
        return new, pen.astype(jnp.float32)


# ------------------------------------------------------------------------------------ the modes

def _run_scan(step: StudentStep, remat: bool, theta0, z, consts, plan: StudentPlan):
    def body(theta, inp):
        return step(theta, z, consts, inp)

    if remat:
        body = jax.checkpoint(body)
    return jax.lax.scan(body, theta0, tuple(plan))


def resolve_checkpoint_every(checkpoint_every: int | str | None, syn_steps: int) -> int:
    """Segment length K of the ``tesla`` mode: ``"sqrt"`` -> ⌈√N⌉, None -> 1 (store every state)."""
    if checkpoint_every is None:
        return 1
    if checkpoint_every == "sqrt":
        return max(1, math.ceil(math.sqrt(syn_steps)))
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, 'sqrt' or None, got {checkpoint_every!r}")
    return min(checkpoint_every, syn_steps)


def _segments(plan: StudentPlan, k: int):
    """Plan padded to ⌈N/K⌉·K steps and reshaped (S, K, ...), with the mask of real steps."""
    n = plan.batches.shape[0]
    s = -(-n // k)
    pad = s * k - n
    batches = jnp.concatenate([plan.batches, jnp.zeros((pad,) + plan.batches.shape[1:], plan.batches.dtype)])
    keys = jnp.concatenate([plan.aug_keys, plan.aug_keys[:pad]]) if pad else plan.aug_keys
    active = jnp.arange(s * k) < n
    return (batches.reshape((s, k) + batches.shape[1:]), keys.reshape((s, k) + keys.shape[1:]),
            active.reshape(s, k))


def _masked_step(step: StudentStep, theta, z, consts, idx, key, active):
    return jax.lax.cond(active, lambda t: step(t, z, consts, (idx, key)),
                        lambda t: (t, jnp.zeros((), jnp.float32)), theta)


def _tesla_forward(step: StudentStep, k: int, theta0, z, consts, plan: StudentPlan):
    batches, keys, active = _segments(plan, k)

    def segment(theta, seg):
        def inner(t, inp):
            return _masked_step(step, t, z, consts, *inp)

        theta_end, pens = jax.lax.scan(inner, theta, seg)
        return theta_end, (theta, pens)

    theta_n, (starts, pens) = jax.lax.scan(segment, theta0, (batches, keys, active))
    return theta_n, pens.reshape(-1)[: plan.batches.shape[0]], starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _run_tesla(step: StudentStep, k: int, theta0, z, consts, plan: StudentPlan):
    theta_n, pens, _ = _tesla_forward(step, k, theta0, z, consts, plan)
    return theta_n, pens


def _tesla_fwd(step, k, theta0, z, consts, plan):
    theta_n, pens, starts = _tesla_forward(step, k, theta0, z, consts, plan)
    return (theta_n, pens), (starts, z, consts, plan)


def _tesla_bwd(step, k, res, ct):
    starts, z, consts, plan = res
    ct_theta, ct_pens = ct
    plain = dataclasses.replace(step, sdc_mode=None)
    batches, keys, active = _segments(plan, k)
    n = plan.batches.shape[0]
    ct_pens = jnp.concatenate([ct_pens, jnp.zeros((batches.shape[0] * k - n,), ct_pens.dtype)]).reshape(-1, k)

    def segment(carry, seg):
        theta_s, idx_s, keys_s, act_s, ctp_s = seg

        def replay(t, inp):  # recompute the segment's states (no graph kept, no penalty needed)
            return _masked_step(plain, t, z, consts, *inp)[0], t

        _, thetas = jax.lax.scan(replay, theta_s, (idx_s, keys_s, act_s))

        def back(c, inp):  # one step's graph at a time: λ_i, dz from λ_{i+1}
            lam, dz = c
            theta_i, idx, key, act, ctp = inp

            def adjoint(lam, dz):
                _, vjp = jax.vjp(lambda t, zz: step(t, zz, consts, (idx, key)), theta_i, z)
                d_theta, d_z = vjp((lam, ctp))
                return d_theta, jax.tree.map(jnp.add, dz, d_z)

            return jax.lax.cond(act, adjoint, lambda lam, dz: (lam, dz), lam, dz), None

        carry, _ = jax.lax.scan(back, carry, (thetas, idx_s, keys_s, act_s, ctp_s), reverse=True)
        return carry, None

    zero_z = jax.tree.map(jnp.zeros_like, z)
    (lam0, dz), _ = jax.lax.scan(segment, (ct_theta, zero_z), (starts, batches, keys, active, ct_pens), reverse=True)
    return lam0, dz, None, None


_run_tesla.defvjp(_tesla_fwd, _tesla_bwd)


def run_student(step: StudentStep, theta0: Any, z: dict, consts: dict, plan: StudentPlan, memory: str = "remat",
                checkpoint_every: int | str | None = "sqrt") -> tuple[Any, jax.Array]:
    """The N student steps in ``memory`` mode: returns ``(θ_N, P)`` with ``P`` (N,) the per-step
    SDC penalties (zeros without SDC). Differentiable w.r.t. ``theta0`` and ``z``."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {memory!r}; choose one of {MEMORY_MODES} (unroll: plain autodiff, "
                         "remat: rematerialised steps, tesla: constant-activation-memory exact adjoint)")
    if memory == "tesla":
        k = resolve_checkpoint_every(checkpoint_every, int(plan.batches.shape[0]))
        return _run_tesla(step, k, theta0, z, consts, plan)
    return _run_scan(step, memory == "remat", theta0, z, consts, plan)


# ------------------------------------------------------------------------------------- the loss

def trajectory_loss(net: ModelLike, images: jax.Array, labels: jax.Array, syn_lr: jax.Array, start_params: Any,
                    target_params: Any, key: jax.Array, *, syn_steps: int, batch_syn: int | None = None,
                    dsa_strategy: str | None = None, memory: str = "remat",
                    checkpoint_every: int | str | None = "sqrt", sdc: float = 0.0, sdc_mode: str = "mean",
                    sdc_squared: bool = False, variables: dict | None = None,
                    mesh: Mesh | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MTT's trajectory-matching loss (+ SDC on the student steps); see the module docstring.

    ``images`` (n, H, W, C); ``labels`` int (n,) or probability rows (n, C) (differentiable);
    ``syn_lr`` the learnable step size α (scalar); ``start_params`` / ``target_params`` the
    expert's parameters at epochs t and t+M (pytrees like ``net.init(key)["params"]``);
    ``key`` draws the :func:`student_plan`. ``net`` is a jaxdd ``Network`` (student steps in train
    mode) or a ``Model`` / plain ``apply_fn(params, x) -> logits`` (used as given; ``variables``
    unused). For a ``Network``, ``variables`` supplies non-parameter collections
    (BatchNorm running statistics: the student steps and SDC run in train mode and never read
    them, they only give the structure; default: zeros shaped like ``net.init``'s). With ``mesh`` every student batch is split over the ``data`` axis
    (``batch_syn`` must be a multiple of the mesh size). Returns ``(loss, aux)`` with aux
    ``{"match", "sdc", "start_distance"}``. Differentiable w.r.t. images, soft labels and ``syn_lr``
    in every memory mode, with the same gradient.
    """
    if sdc < 0:
        raise ValueError(f"sdc (the SDC weight λ) must be >= 0, got {sdc}")
    if sdc > 0 and sdc_mode not in SDC_MODES:
        raise ValueError(f"unknown SDC mode {sdc_mode!r}; choose one of {SDC_MODES}")
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    n = images.shape[0]
    is_net = isinstance(net, Network)
    if is_net and (images.ndim != 4 or tuple(images.shape[1:]) != tuple(net.input_shape)):
        raise ValueError(f"synthetic images must have shape (n, {', '.join(map(str, net.input_shape))}) for network "
                         f"{net.name!r}, got {images.shape}")
    classes = net.num_classes if is_net else (labels.shape[1] if labels.ndim == 2 else None)
    if labels.shape[0] != n or labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != classes):
        raise ValueError(f"need one int label or one probability row over {classes} classes per synthetic "
                         f"image: {n} images, labels of shape {labels.shape}")
    plan = student_plan(key, n, syn_steps, batch_syn)
    if mesh is not None and plan.batches.shape[1] % mesh.size:
        raise ValueError(f"the student batch ({plan.batches.shape[1]} images) must be a multiple of the "
                         f"{mesh.size} devices to split it; choose batch_syn (or ipc) accordingly or run without a mesh")
    if not is_net:
        variables = {}
    elif variables is None:
        variables = jax.eval_shape(net.init, jax.random.key(0))
        variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
    consts = {"variables": {k: v for k, v in variables.items() if k != "params"}}
    z = {"images": images, "lr": jnp.asarray(syn_lr, jnp.float32)}
    if is_soft(labels):
        z["labels"] = labels.astype(jnp.float32)
    else:
        consts["labels"] = labels.astype(jnp.int32)
    step = StudentStep(net, dsa_strategy or None, sdc_mode if sdc > 0 else None, sdc_squared, mesh)
    theta_n, pens = run_student(step, start_params, z, consts, plan, memory, checkpoint_every)
    match = normalized_param_loss(theta_n, jax.lax.stop_gradient(start_params), jax.lax.stop_gradient(target_params))
    pen = jnp.mean(pens)
    loss = match + sdc * pen if sdc > 0 else match
    return loss, {"match": match, "sdc": pen,
                  "start_distance": param_sq_distance(start_params, target_params)}
