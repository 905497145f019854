"""Multi-process runs: 2 processes on localhost x 2 CPU devices each (JAX's multi-controller
runtime with gloo collectives), against 1 process x 4 devices and 1 process x 1 device.

Each run is ``tests/multiprocess_worker.py`` (DM distillation with checkpoints, a scoring pass,
a 4-seed evaluation through the ``jaxdd`` CLI) in fresh processes with their own device counts.
"""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxdd.utils.checkpoint import Checkpointer
from jaxdd.utils.distributed import cpu_collective_timeout_flags

WORKER = Path(__file__).resolve().parent / "multiprocess_worker.py"
TIMEOUT = 600  # seconds for one launch (a loaded 2-core CI machine compiles slowly)
HEARTBEAT = 10  # seconds after which the survivors of a dead process are told (JAXDD_HEARTBEAT_TIMEOUT)
COLLECTIVE_WAIT = 300  # seconds a device may wait at a collective for the other process (XLA's default: 40)


def _reserve_port() -> socket.socket:
    """A free localhost port, held until the returned socket is closed. Bound with SO_REUSEPORT and
    not listening: the coordinator service (gRPC, which sets SO_REUSEPORT) binds the same port and
    receives every connection, while nothing else can take the port in between. Closing a probe
    socket and passing on its number left that gap open to any process picking a port meanwhile
    (the other pytest worker's Jupyter kernels, any outgoing connection)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("localhost", 0))
    return s


def _start(out: Path, dataset: str, phases: str, processes: int, devices_per_process: int,
           extra: list[str] = ()) -> list[subprocess.Popen]:
    # a process may reach a collective minutes after its peer on a loaded 2-core machine (compiling,
    # or the primary writing outputs): XLA's 40 s rendezvous abort (DEADLINE_EXCEEDED) is raised to
    # COLLECTIVE_WAIT; a dead peer is still reported after HEARTBEAT seconds
    env = {**os.environ, "JAXDD_HEARTBEAT_TIMEOUT": str(HEARTBEAT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process} "
                        f"--xla_backend_optimization_level=0 {cpu_collective_timeout_flags(COLLECTIVE_WAIT)}"}
    reservation = _reserve_port()
    port = reservation.getsockname()[1]
    procs = []
    for i in range(processes):
        dist = [] if processes == 1 else ["--coordinator", f"localhost:{port}", "--num-processes", str(processes),
                                          "--process-id", str(i)]
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), dataset, phases, *extra, *dist],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    procs[0].port_reservation = reservation  # closed by _release once the processes have ended
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    """Kill the process groups this test started (by their ids) and reap them."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        p.communicate()
    _release(procs)


def _release(procs: list[subprocess.Popen]) -> None:
    """Close the port reservation of a launch whose processes have ended."""
    procs[0].port_reservation.close()


def _wait(procs: list[subprocess.Popen], what: str) -> None:
    """Wait for the processes of one launch (``what`` names it); each must exit with status 0."""
    try:
        logs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    except subprocess.TimeoutExpired:
        _stop(procs)
        pytest.fail(f"{what} did not finish in {TIMEOUT} s")
    _release(procs)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]


def _results(out: Path) -> dict:
    dm = np.load(out / "dm" / "distilled" / "distilled.npz")
    scores = np.load(out / "scores.npz")
    ev = json.loads((out / "eval.json").read_text())
    return {"images": dm["images"], "labels": dm["labels"], "scores": scores["scores"], "raw": scores["raw"],
            "eval": ev}


def _accuracies(ev) -> np.ndarray:
    """Every per-model test accuracy in an ``eval.json`` record (whatever its nesting)."""
    found = []

    def walk(v, key=""):
        if isinstance(v, dict):
            for k, w in v.items():
                walk(w, k)
        elif isinstance(v, list):
            if key in ("accs", "accuracies", "per_model") and all(isinstance(a, (int, float)) for a in v):
                found.extend(v)
            else:
                for w in v:
                    walk(w, key)
    walk(ev)
    return np.asarray(found, np.float64)


def test_two_processes_with_a_crash_and_resume_match_one_process(tmp_path, tiny_npz):
    # 1. 2 processes x 2 devices distil; process 1 is killed right after the checkpoint of step 2
    # (it waits there to be killed: on a loaded machine this test could otherwise see the step only
    # after the run had finished)
    mp = tmp_path / "2x2"
    ckpt_dir = mp / "dm" / "checkpoints"
    procs = _start(mp, tiny_npz, "distill", 2, 2, ["--hang-after-checkpoint", "2"])
    refs = []
    try:
        try:
            deadline = time.time() + TIMEOUT
            while not (ckpt_dir / "2").is_dir():
                assert time.time() < deadline and procs[0].poll() is None, "no checkpoint of step 2 appeared"
                time.sleep(0.1)
            procs[1].kill()
            killed_at = time.time()
            # the uninterrupted runs of step 3 start now: independent processes in their own folders,
            # they fill the survivor's idle wait for the heartbeat timeout
            refs = [_start(tmp_path / "1x4", tiny_npz, "distill,score,eval", 1, 4, ["--devices", "4"]),
                    _start(tmp_path / "1x1", tiny_npz, "distill,score,eval", 1, 1)]
            log0 = procs[0].communicate(timeout=HEARTBEAT + 60)[0]  # the survivor must stop, not hang
            waited = time.time() - killed_at
        finally:
            _stop(procs)
        assert not (mp / "dm" / "results.json").exists(), "the run finished before the kill; lengthen it"
        assert procs[0].returncode != 0
        # JAX's coordination service reports the dead peer and stops the survivor. Its wording depends on
        # which side notices first: "heartbeat timeout", "stopped sending heartbeats" or "remote task has failed".
        assert re.search(r"heartbeat|remote task has failed", log0), log0[-2000:]
        assert waited < HEARTBEAT + 60
        # the last committed checkpoint is intact: listed, and its record (leaf checksums) readable
        with Checkpointer(ckpt_dir) as ck:
            assert 2 in ck.all_steps()
            info = ck.describe()
        assert info["step"] >= 2 and info["leaves"]

        # 2. the same 2 x 2 job resumes from it, then scores and evaluates
        _wait(_start(mp, tiny_npz, "distill,score,eval", 2, 2, ["--resume"]), "the resumed 2 x 2 run")
        history = json.loads((mp / "dm" / "history.json").read_text())
        assert history  # the resumed run completed and wrote its history once (the primary)

        # 3. the same work uninterrupted on 1 process x 4 devices and on 1 process x 1 device
        _wait(refs[0], "the 1 x 4 run")
        _wait(refs[1], "the 1 x 1 run")
    finally:
        for r in refs:
            _stop(r)
    got, four, one = _results(mp), _results(tmp_path / "1x4"), _results(tmp_path / "1x1")
    for ref in (four, one):
        np.testing.assert_array_equal(got["labels"], ref["labels"])
        # The distilled images (values O(1)) after 6 DM steps: the only difference between the
        # layouts is the summation order of the cross-device reductions (feature means over the
        # real images split over 4 devices), float32 rounding ~1e-7 relative per step; 1e-5
        # leaves room for 6 steps of it and catches any different draw or lost update (O(1e-2)).
        np.testing.assert_allclose(got["images"], ref["images"], rtol=0, atol=1e-5)
        # Per-example losses (O(1)) of 4 models after one epoch: the same reasoning, one epoch of
        # SGD with the batch gradient reduced over the devices.
        np.testing.assert_allclose(got["scores"], ref["scores"], rtol=0, atol=1e-4)
        np.testing.assert_allclose(got["raw"], ref["raw"], rtol=0, atol=1e-4)
        # 4-seed evaluation: accuracies on 9 test images are multiples of 1/9; the tiny logit
        # differences above cannot move a prediction unless two logits tie, so they are equal.
        a, b = _accuracies(got["eval"]), _accuracies(ref["eval"])
        assert a.size >= 4 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6)
    # only the primary wrote: one TensorBoard event file per distillation launch
    assert len(list((mp / "dm").glob("events.out.tfevents.*"))) == 2

    # the checkpoint the 2 processes wrote last restores here, in 1 process with 8 devices (the
    # global shapes do not depend on the process count): the final synthetic set, bit for bit
    import jax

    from jaxdd.data import load_dataset
    from jaxdd.distill import RealData, build_method
    from jaxdd.models import create_network

    ds = load_dataset(tiny_npz)
    net = create_network("mlp-w16", num_classes=ds.num_classes, input_shape=ds.image_shape)
    template = build_method("dm", net, ipc=4, batch_real=4).init(jax.random.key(0), RealData.from_dataset(ds))
    with Checkpointer(ckpt_dir) as ck:
        step, state, _ = ck.restore(template)
    assert step == 6 and jax.process_count() == 1
    np.testing.assert_array_equal(np.asarray(state.images), got["images"])
