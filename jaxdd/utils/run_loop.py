"""The one run loop: a step function, periodic hooks, checkpoints, resume and the NaN guard.

Every long run of the library (distillation, expert training, prior training, ensemble scoring,
ACS curricula) is ``run_loop(step, state, config, hooks)``::

    state, metrics = step(state, i)      # step i -> i + 1 (i counts from 0); metrics: scalars

The loop owns what is the same for all of them: the tqdm bar, the history (a list of dicts the
hooks return), orbax checkpoints (:class:`~jaxdd.utils.checkpoint.Checkpointer`) of the state and
the history every ``checkpoint_every`` steps and at the last one, resume from the latest
checkpoint, refusing a checkpoint made with other settings (:func:`check_resume`, naming the
fields that differ), the NaN guard (every floating leaf of the new state must be finite, checked
before anything is saved, so the last good checkpoint stays the latest) and the message of an
interrupted or failed run (where the last checkpoint is and how to continue).

A resumed run is bit-identical to an uninterrupted one as long as ``step`` draws its randomness
from the state or from keys folded with the step number.

Hooks (:class:`Hook`) run after a step at the steps they ask for; what they return (a dict) is
appended to the history. Hooks marked ``after_checkpoint`` run after that step's checkpoint
(images of the saved state, logs, a user callback that may stop the run by raising).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxdd.utils.io import OutputError, as_path, to_jsonable


class NonFiniteError(ValueError):
    """A learnable tensor of the state became NaN or inf."""


@dataclasses.dataclass(frozen=True)
class Hook:
    """``fn(step, state, metrics) -> dict | None`` run after step ``step`` (1-based) when
    ``every`` divides it (0: never), at the listed steps ``at``, at the last step (``at_end``) or,
    with ``at_start``, once at step 0 of a fresh run (``metrics`` empty). A returned dict is
    appended to the history."""

    fn: Callable[[int, Any, dict], dict | None]
    every: int = 1
    at: tuple[int, ...] = ()
    at_start: bool = False
    at_end: bool = False
    after_checkpoint: bool = False

    def fires(self, step: int, last: int) -> bool:
        return bool((self.every and step % self.every == 0) or step in self.at or (self.at_end and step == last))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a run is driven (not what it computes).

    ``record`` says what made the run: it is stored with every checkpoint and compared on resume
    (its ``"<unit>s"`` entry is the step count ``steps``); keys in ``may_change`` may differ
    (settings that do not change the state's trajectory), also inside nested dicts. ``steps`` may
    grow on resume (continuing a finished run) unless ``extendable`` is False (then
    ``not_extendable`` says why). ``stop_at`` ends the run early at that step (with a checkpoint).
    ``nan_message`` (None: no NaN guard) names the problem and the fix; ``{metrics}`` is replaced
    by the step's metrics. ``out`` is the folder named in messages (default ``checkpoint_dir``).
    """

    steps: int
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    checkpoint_every: int = 50
    max_to_keep: int = 2
    record: dict = dataclasses.field(default_factory=dict)
    may_change: tuple[str, ...] = ()
    extendable: bool = True
    not_extendable: str = "its schedule depends on the total"
    stop_at: int | None = None
    unit: str = "step"
    units: str | None = None  # the plural (default unit + "s"): the step count's key in ``record``
    kind: str = "run"
    out: str | Path | None = None
    nan_message: str | None = None
    desc: str = ""
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "checkpoint_every", "max_to_keep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'steps' else 1}, got {v!r}")
        if self.stop_at is not None and self.stop_at < 0:
            raise ValueError(f"stop_at must be >= 0, got {self.stop_at}")

    @property
    def steps_key(self) -> str:
        return self.units or f"{self.unit}s"

    @property
    def folder(self):
        """The run's folder as an ``etils.epath.Path`` (a URL stays a URL)."""
        where = self.out if self.out is not None else self.checkpoint_dir
        return None if where is None else as_path(where)

    def full_record(self) -> dict:
        """``record`` with the step count, as it reads back from a checkpoint's JSON."""
        return json_roundtrip({**self.record, self.steps_key: self.steps})


@dataclasses.dataclass
class LoopResult:
    state: Any
    history: list[dict]
    start: int  # the step the run started (or resumed) from
    end: int  # the step it stopped at
    resumed_from: int | None
    saved_at: int | None  # the latest checkpoint (None: none written)
    seconds: float  # wall time of the steps run in this call

    def resume_hint(self, config: RunConfig) -> str:
        return resume_hint(config, self.saved_at)


def json_roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists): to compare with a stored record."""
    return json.loads(json.dumps(to_jsonable(obj)))


def all_finite(state: Any) -> jax.Array:
    """True when every floating leaf of ``state`` is finite (NumPy and Python leaves included)."""
    leaves = [jnp.all(jnp.isfinite(jnp.asarray(x))) for x in jax.tree.leaves(state)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


_all_finite = jax.jit(all_finite)


def resume_hint(config: RunConfig, saved_at: int | None) -> str:
    """Where the last checkpoint is and how to continue from it."""
    if config.checkpoint_dir is None:
        return "nothing was saved (out=None)"
    if saved_at is None:
        return ("no checkpoint was written yet: rerun the same command without --resume to start again in "
                f"{config.folder}")
    return (f"the last checkpoint ({config.unit} {saved_at}) is in {as_path(config.checkpoint_dir)}: rerun the same "
            "command with --resume to continue from it")


def record_diff(saved: dict, now: dict, skip: tuple[str, ...] | set[str] = ()) -> list[str]:
    """What differs between two run records (as read back from JSON), one part per nested dict
    ("a different <key> (field: old in the checkpoint, new now; ...)") and one for the rest
    ("different run settings (...)"); keys in ``skip`` are ignored at both levels."""
    skip = set(skip)

    def show(run: dict, k: str) -> str:
        return repr(run[k]) if k in run else "unset"

    def changed(before: dict, after: dict) -> list[str]:
        return [f"{k}: {show(before, k)} in the checkpoint, {show(after, k)} now"
                for k in sorted((set(before) | set(after)) - skip)
                if (k in before, before.get(k)) != (k in after, after.get(k))]

    nested = sorted(k for k in set(saved) | set(now) if isinstance(now.get(k), dict) and k not in skip)
    parts = []
    for k in nested:
        diff = changed(saved.get(k) if isinstance(saved.get(k), dict) else {}, now[k])
        if diff:
            parts.append(f"a different {k.replace('_', ' ')} ({'; '.join(diff)})")
    run = changed({k: v for k, v in saved.items() if k not in nested},
                  {k: v for k, v in now.items() if k not in nested})
    return parts + ([f"different run settings ({'; '.join(run)})"] if run else [])


def check_resume(config: RunConfig, saved: dict, latest: int) -> None:
    """Refuse to resume a checkpoint (made at step ``latest``) whose record ``saved`` differs from
    ``config.record`` (:func:`record_diff`; keys in ``config.may_change`` may differ); the step
    count may not fall below ``latest``, nor change at all unless ``config.extendable``."""
    now = config.full_record()
    parts = record_diff(saved, now, set(config.may_change) | {config.steps_key})
    steps, key, steps_part = now[config.steps_key], config.steps_key, None
    if steps < latest:
        steps_part = f"{key}: {steps} is below the checkpoint's {config.unit} {latest}"
    elif not config.extendable and steps != saved.get(key):
        steps_part = f"{key}: {saved.get(key)!r} in the checkpoint, {steps!r} now ({config.not_extendable})"
    if steps_part is not None:
        if parts and parts[-1].startswith("different run settings ("):
            parts[-1] = f"{parts[-1][:-1]}; {steps_part})"
        else:
            parts.append(f"different run settings ({steps_part})")
    if parts:
        raise ValueError(f"cannot resume {config.folder}: it was made with {' and '.join(parts)}. Resume with the "
                         "checkpoint's settings, or choose another --out folder")


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C (SIGINT) inside the block sets the yielded event instead of raising at once; a second
    Ctrl-C raises ``KeyboardInterrupt`` immediately. The loop checks the event between steps, so an
    interruption always ends on a step boundary (a ``KeyboardInterrupt`` raised at an arbitrary point
    can land in a garbage-collection callback, where Python prints and drops it). Outside the main
    thread, where signal handlers cannot be set, the block leaves SIGINT alone."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def run_loop(step: Callable[[Any, int], tuple[Any, dict]], state: Any, config: RunConfig,
             hooks: tuple[Hook, ...] | list[Hook] = (), *, history: list | None = None,
             on_start: Callable[[Any], Any] | None = None,
             postfix: Callable[[dict], dict] | None = None) -> LoopResult:
    """Run ``step`` from step 0 (or the latest checkpoint) to ``config.steps`` (module docstring).

    ``state`` is the freshly initialised state (also the template a checkpoint is restored into);
    ``history`` (default a new list) is filled in place, so hooks can read it (a resumed run
    starts with the checkpoint's); ``on_start(state) -> state`` runs on a fresh start only;
    ``postfix(metrics)`` gives the progress bar's postfix. Returns a :class:`LoopResult`; an
    interruption raises ``KeyboardInterrupt`` and a failed save :class:`OutputError`, each saying
    where the last checkpoint is.
    """
    from tqdm.auto import tqdm

    history = [] if history is None else history
    start, resumed_from, ckpt = 0, None, None
    if config.checkpoint_dir is not None:
        from jaxdd.utils.checkpoint import Checkpointer

        ckpt = Checkpointer(config.checkpoint_dir, max_to_keep=config.max_to_keep)
        try:
            latest = ckpt.latest_step()
            if latest is not None and not config.resume:
                raise ValueError(f"{config.folder} already holds {config.kind} (checkpoint at {config.unit} {latest}); "
                                 "pass --resume to continue it, or choose another --out folder")
            if latest is not None:
                check_resume(config, ckpt.describe(latest)["metadata"].get("run") or {}, latest)
                start, state, meta = ckpt.restore(state, step=latest)
                history[:] = list(meta.get("history", []))
                resumed_from = start
        except BaseException:
            ckpt.close()
            raise
    saved_at = resumed_from
    record = config.full_record()
    end = config.steps if config.stop_at is None else min(config.stop_at, config.steps)
    before = [h for h in hooks if not h.after_checkpoint]
    after = [h for h in hooks if h.after_checkpoint]

    def fire(group: list[Hook], i: int, st: Any, metrics: dict, starting: bool = False) -> None:
        for h in group:
            if h.at_start if starting else h.fires(i, config.steps):
                entry = h.fn(i, st, metrics)
                if entry is not None:
                    history.append(entry)

    t0 = time.time()
    bar = None
    i = start
    with deferred_interrupt() as interrupted:  # Ctrl-C stops at the next step boundary
        try:
            if start == 0 and not history:
                if on_start is not None:
                    state = on_start(state)
                fire(list(hooks), 0, state, {}, starting=True)
            t0 = time.time()
            bar = tqdm(range(start, end), desc=config.desc, disable=not config.progress, dynamic_ncols=True,
                       initial=start, total=config.steps)
            for i in range(start + 1, end + 1):
                new_state, metrics = step(state, i - 1)
                if config.nan_message is not None and not bool(_all_finite(new_state)):
                    where = (f"the last good checkpoint ({config.unit} {saved_at}) is kept in {config.checkpoint_dir}; "
                             "fix the setting and rerun with --resume" if saved_at is not None
                             else "no checkpoint was written")
                    raise NonFiniteError(f"{config.unit} {i}: {config.nan_message.replace('{metrics}', str(metrics))}; "
                                         f"{where}")
                state = new_state
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix(postfix(metrics))
                fire(before, i, state, metrics)
                if ckpt is not None and (i % config.checkpoint_every == 0 or i == end):
                    try:
                        ckpt.save(i, state, {"run": record, "history": history})
                        saved_at = i
                    except OutputError as err:  # disk full: one line, the previous checkpoint kept
                        raise OutputError(f"{err}; {resume_hint(config, saved_at)}") from None
                try:
                    fire(after, i, state, metrics)
                except OutputError as err:
                    raise OutputError(f"{err}; {resume_hint(config, saved_at)}") from None
                if interrupted.is_set():
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if ckpt is not None:  # Ctrl-C during a save is raised once that save has committed
                saved_at = ckpt.latest_step()
            raise KeyboardInterrupt(f"interrupted at {config.unit} {i} of {config.steps}; "
                                    f"{resume_hint(config, saved_at)}") from None
        finally:
            if bar is not None:
                bar.close()
            if ckpt is not None:
                ckpt.close()
    return LoopResult(state=state, history=history, start=start, end=end, resumed_from=resumed_from,
                      saved_at=saved_at, seconds=time.time() - t0)
