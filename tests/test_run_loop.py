"""The one run loop (jaxdd.utils.run_loop): resume, refusing other settings, the NaN guard, hooks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.utils.checkpoint import Checkpointer
from jaxdd.utils.run_loop import Hook, NonFiniteError, RunConfig, check_resume, run_loop


def init_state():
    return {"x": jnp.zeros((3,), jnp.float32), "key": jax.random.key(0), "n": jnp.zeros((), jnp.int32)}


def step(state, i):
    """A random walk drawing from the state's key; nan from step ``nan_at`` on when set."""
    key, k = jax.random.split(state["key"])
    x = 0.9 * state["x"] + jax.random.normal(k, (3,))
    return {"x": x, "key": key, "n": state["n"] + 1}, {"loss": float(jnp.sum(x ** 2))}


def config(tmp_path, **kw):
    return RunConfig(**{"steps": 6, "checkpoint_dir": tmp_path / "ck", "checkpoint_every": 2, "record": {"lr": 0.1},
                        "progress": False, **kw})


def metrics_hook():
    return Hook(lambda i, st, m: {"step": i, **m})


def test_resume_after_a_kill_is_bit_identical(tmp_path):
    full = run_loop(step, init_state(), config(tmp_path / "a"), [metrics_hook()])

    def kill(i, st, m):
        if i == 3:  # after the checkpoint at 2, before the one at 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as err:
        run_loop(step, init_state(), config(tmp_path / "b"), [metrics_hook(), Hook(kill, after_checkpoint=True)])
    assert str(err.value) == (f"interrupted at step 3 of 6; the last checkpoint (step 2) is in {tmp_path / 'b' / 'ck'}"
                              ": rerun the same command with --resume to continue from it")
    with Checkpointer(tmp_path / "b" / "ck") as ck:
        assert ck.all_steps() == [2]
    with pytest.raises(ValueError, match=r"already holds run \(checkpoint at step 2\); pass --resume"):
        run_loop(step, init_state(), config(tmp_path / "b"), [metrics_hook()])
    resumed = run_loop(step, init_state(), config(tmp_path / "b", resume=True), [metrics_hook()])
    assert (resumed.start, resumed.resumed_from, resumed.end) == (2, 2, 6)
    # the same bits as the uninterrupted run, and as six steps by hand
    np.testing.assert_array_equal(np.asarray(resumed.state["x"]), np.asarray(full.state["x"]))
    np.testing.assert_array_equal(jax.random.key_data(resumed.state["key"]), jax.random.key_data(full.state["key"]))
    by_hand = init_state()
    for i in range(6):
        by_hand, _ = step(by_hand, i)
    np.testing.assert_array_equal(np.asarray(full.state["x"]), np.asarray(by_hand["x"]))
    assert resumed.history == full.history and [h["step"] for h in full.history] == [1, 2, 3, 4, 5, 6]
    # a finished run may grow (extendable): 8 steps continue from 6 with the bits of 8 straight steps
    longer = run_loop(step, init_state(), config(tmp_path / "b", resume=True, steps=8))
    straight = run_loop(step, init_state(), config(tmp_path / "c", steps=8))
    assert longer.start == 6
    np.testing.assert_array_equal(np.asarray(longer.state["x"]), np.asarray(straight.state["x"]))


def test_changed_settings_are_refused_naming_the_fields(tmp_path):
    record = {"lr": 0.1, "seed": 0, "every": 5, "method_config": {"ipc": 1, "momentum": 0.5}}
    run_loop(step, init_state(), config(tmp_path, record=record, may_change=("every",)))
    folder = tmp_path / "ck"
    changed = {"lr": 0.2, "seed": 0, "every": 7, "method_config": {"ipc": 1, "momentum": 0.9}, "new": True}
    with pytest.raises(ValueError) as err:
        run_loop(step, init_state(), config(tmp_path, record=changed, may_change=("every",), resume=True))
    assert str(err.value) == (
        f"cannot resume {folder}: it was made with a different method config (momentum: 0.5 in the checkpoint, 0.9 "
        "now) and different run settings (lr: 0.1 in the checkpoint, 0.2 now; new: unset in the checkpoint, True "
        "now). Resume with the checkpoint's settings, or choose another --out folder")
    same = dict(record, every=9)  # "every" may change: resumes
    assert run_loop(step, init_state(), config(tmp_path, record=same, may_change=("every",), resume=True)).start == 6
    with pytest.raises(ValueError, match=r"different run settings \(steps: 4 is below the checkpoint's step 6\)"):
        run_loop(step, init_state(), config(tmp_path, record=same, may_change=("every",), resume=True, steps=4))
    with pytest.raises(ValueError, match=r"different run settings \(steps: 6 in the checkpoint, 9 now \(the "
                                         r"schedule needs it\)\)"):
        run_loop(step, init_state(), config(tmp_path, record=same, may_change=("every",), resume=True, steps=9,
                                            extendable=False, not_extendable="the schedule needs it"))
    # the check alone, against a hand-written stored record (tuples compare as the JSON lists they become)
    check_resume(RunConfig(steps=3, record={"shape": (1, 2)}), {"shape": [1, 2], "steps": 3}, latest=3)


def test_nan_guard_stops_before_saving(tmp_path):
    def nan_from_3(state, i):
        state, metrics = step(state, i)
        return ({**state, "x": jnp.where(state["n"] >= 3, jnp.nan, state["x"])}, metrics)

    cfg = config(tmp_path, nan_message="x became NaN (metrics {metrics}); lower the lr")
    with pytest.raises(NonFiniteError, match=r"^step 3: x became NaN \(metrics \{'loss': .*\}\); lower the lr; the "
                                             r"last good checkpoint \(step 2\) is kept in .*ck; fix the setting"):
        run_loop(nan_from_3, init_state(), cfg, [metrics_hook()])
    with Checkpointer(tmp_path / "ck") as ck:
        assert ck.all_steps() == [2]
        _, state, meta = ck.restore(init_state())
    assert int(state["n"]) == 2 and np.all(np.isfinite(np.asarray(state["x"])))
    assert [h["step"] for h in meta["history"]] == [1, 2]
    with pytest.raises(NonFiniteError, match="step 3: .*no checkpoint was written"):  # in memory
        run_loop(nan_from_3, init_state(), RunConfig(steps=5, nan_message="nan", progress=False))
    # without a message there is no guard
    assert np.isnan(run_loop(nan_from_3, init_state(), RunConfig(steps=4, progress=False)).state["x"]).all()


def test_hooks_fire_at_the_right_steps(tmp_path, monkeypatch):
    import jaxdd.utils.checkpoint as checkpoint

    calls = []

    def hook(name):
        def fn(i, st, m):
            calls.append((name, i))
            assert int(st["n"]) == i  # the state after step i
            return {"hook": name, "step": i} if name == "every3" else None
        return fn

    class SpyCheckpointer(checkpoint.Checkpointer):
        def save(self, step, state, metadata=None):
            calls.append(("save", step))
            return super().save(step, state, metadata)

    monkeypatch.setattr(checkpoint, "Checkpointer", SpyCheckpointer)
    hooks = [Hook(hook("every3"), every=3, at_start=True), Hook(hook("at5"), every=0, at=(5,)),
             Hook(hook("end"), every=0, at_end=True), Hook(hook("after"), every=2, after_checkpoint=True)]
    result = run_loop(step, init_state(), config(tmp_path, steps=7, checkpoint_every=4), hooks,
                      on_start=lambda st: calls.append(("start", 0)) or st)
    assert calls == [("start", 0), ("every3", 0),
                     ("after", 2), ("every3", 3), ("save", 4), ("after", 4), ("at5", 5), ("every3", 6),
                     ("after", 6), ("end", 7), ("save", 7)]
    assert result.history == [{"hook": "every3", "step": s} for s in (0, 3, 6)]
    # stop_at: stops at that step with a checkpoint; at_end hooks wait for the real end
    calls.clear()
    part = run_loop(step, init_state(), config(tmp_path / "s", steps=7, checkpoint_every=4, stop_at=5), hooks)
    assert part.end == 5
    assert calls == [("every3", 0), ("after", 2), ("every3", 3), ("save", 4), ("after", 4), ("at5", 5), ("save", 5)]


def test_ctrl_c_stops_on_the_next_step_boundary(tmp_path):
    """A real SIGINT in the middle of step 3 lets step 3 finish (and its checkpoint commit), then stops;
    a second SIGINT raises at once; the previous SIGINT handler is back afterwards."""
    import os
    import signal

    ran = []

    def interrupted_step(state, i):
        ran.append(i)
        if i == 2:  # the third step: Ctrl-C arrives while it computes
            os.kill(os.getpid(), signal.SIGINT)
        return step(state, i)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as err:
        run_loop(interrupted_step, init_state(), config(tmp_path / "a", checkpoint_every=1), [metrics_hook()])
    assert ran == [0, 1, 2] and str(err.value).startswith("interrupted at step 3 of 6; the last checkpoint (step 3)")
    assert signal.getsignal(signal.SIGINT) is before

    def twice(state, i):
        ran.append(i)
        if i == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the second one does not wait for the step to end
            raise AssertionError("not reached")
        return step(state, i)

    ran.clear()
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 2 of 6"):
        run_loop(twice, init_state(), config(tmp_path / "b"), [metrics_hook()])
    assert ran == [0, 1] and signal.getsignal(signal.SIGINT) is before
