"""Scaling: seconds of a DM iteration and of an evaluation epoch over 1, 2, 4, 8 devices and 1, 2 processes.

    python benchmarks/scaling.py [--devices 1,2,4,8] [--processes 1,2] [--ipc 10] [--batch-real 32]
                                 [--models 4] [--eval-images 256] [--repeats 3] [--platform auto] --out scaling.json

Every row runs in fresh worker processes (``P`` processes with ``D/P`` devices each, joined by
``jaxdd.utils.distributed.initialize`` on a free localhost port), on CIFAR-10-shaped random data
(10 classes of 32x32x3, ConvNet):

- ``dm_s``: one jitted DM update (``batch_real`` real images per class split over the ``data``
  axis of a mesh over all D devices; the synthetic set replicated), median of ``--repeats`` calls
  after one warm-up;
- ``eval_s``: one evaluation epoch (``Trainer.train_epoch``: ``--models`` seeds of ConvNet on
  ``--eval-images`` images, batch 256 split over the devices), median likewise;
- ``eval_models_axis_s`` (rows with more than one device dividing ``--models``): the same epoch
  with the seeds split over a ``models`` mesh axis (``models_mesh``, loop ``steps``: each device
  trains its own seeds, no communication);
- ``dm_ratio`` / ``eval_ratio``: the row's time over the 1-device, 1-process row of the same
  platform (below 1: faster than one device).

On CPU the devices are fake (``jax_num_cpu_devices``): all of them share the same cores, so the
ratios measure the overhead of sharding and of the cross-process (gloo) collectives, not a
speed-up. On a GPU host the ``gpu`` rows use the real GPUs (rows needing more GPUs than the host
has are listed as skipped); ``--platform cpu`` runs only the CPU rows, ``--platform gpu`` only
the GPU rows, ``auto`` both where a GPU is present. The 1-minute load average is recorded.

``--memory --batch-real 256`` instead prints XLA's compiled memory estimate per device of one DM
update (ConvNet, CIFAR-10 shape, all real images embedded at once as on an accelerator) at IPC 10
and 50 on ``--devices`` (fake CPU) devices, in two layouts: ``data`` (the real batch split by
image, the synthetic set and its gradient replicated) and ``class`` (``class_split``: the classes,
real and synthetic, split over the devices; 1 device is the unsplit loss).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NUM_CLASSES, SHAPE = 10, (32, 32, 3)
MARK = "SCALING-RESULT "
sys.path[:0] = [ROOT, HERE]  # this checkout's jaxdd (and _bench) before any installed copy
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # workers may share the GPU with this process


# ------------------------------------------------------------------------------------- worker
def worker(args) -> int:
    """One process of one row: initialise, time the DM update and the evaluation epoch."""
    from jaxdd.utils import distributed

    # all three given: one process stays one process (no cluster detection)
    distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                           cpu_devices=args.local_devices if args.platform == "cpu" else None)
    import jax
    import numpy as np

    from jaxdd.distill import build_method
    from jaxdd.distill.base import RealData
    from jaxdd.models import create_network
    from jaxdd.train import TrainConfig, Trainer
    from jaxdd.utils.mesh import data_mesh, models_mesh, replicate

    args.devices = int(args.devices)
    if jax.device_count() != args.devices:
        raise SystemExit(f"worker sees {jax.device_count()} devices, expected {args.devices}")
    mesh = data_mesh() if args.devices > 1 else None
    net = create_network("convnet", num_classes=NUM_CLASSES, input_shape=SHAPE)
    rng = np.random.default_rng(0)  # the same data in every process
    per_class = max(args.batch_real, args.ipc)
    x = rng.standard_normal((NUM_CLASSES * per_class,) + SHAPE).astype(np.float32)
    y = np.repeat(np.arange(NUM_CLASSES), per_class).astype(np.int32)
    real = RealData.from_arrays(x, y, NUM_CLASSES)
    method = build_method("dm", net, mesh=mesh, ipc=args.ipc, batch_real=args.batch_real)
    state = method.init(jax.random.key(0), real)
    real, state = replicate((real, state), mesh)

    def timed(call, repeats):
        out = call()  # warm-up (compiles)
        jax.block_until_ready(out)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(call())
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    update = jax.jit(method.update)
    t = time.perf_counter()
    jax.block_until_ready(update(state, real))
    compile_s = time.perf_counter() - t
    dm_s = timed(lambda: update(state, real), args.repeats)

    trainer = Trainer(net, TrainConfig(batch_size=256), mesh=mesh)
    tstate = trainer.init(jax.random.key(1), args.models)
    xe = rng.standard_normal((args.eval_images,) + SHAPE).astype(np.float32)
    ye = (np.arange(args.eval_images) % NUM_CLASSES).astype(np.int32)
    eval_s = timed(lambda: trainer.train_epoch(tstate, xe, ye, jax.random.key(2))[0], args.repeats)
    result = {"dm_s": round(dm_s, 4), "dm_first_call_s": round(compile_s, 2), "eval_s": round(eval_s, 4),
              "eval_loop": trainer.epoch_loop, "backend": jax.default_backend()}
    if args.devices > 1 and args.models % args.devices == 0:  # the seeds split over a models axis instead
        by_model = Trainer(net, TrainConfig(batch_size=256), mesh=models_mesh(), loop="steps")
        mstate = by_model.init(jax.random.key(1), args.models)
        result["eval_models_axis_s"] = round(timed(
            lambda: by_model.train_epoch(mstate, xe, ye, jax.random.key(2))[0], args.repeats), 4)
    if jax.process_index() == 0:
        print(MARK + json.dumps(result), flush=True)
    return 0


def memory_rows(args) -> list[dict]:
    """Compiled memory per device of one DM update at IPC 10/50 on ``--devices`` fake CPU devices,
    the real batch split by image (``data``) or the classes split (``class``); compiled, not run."""
    import dataclasses

    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", max(int(v) for v in args.devices.split(",")))
    from jaxdd.distill import build_method
    from jaxdd.distill.base import RealData
    from jaxdd.models import create_network
    from jaxdd.utils.mesh import data_mesh, replicate

    net = create_network("convnet", num_classes=NUM_CLASSES, input_shape=SHAPE)
    rows = []
    n = args.batch_real
    x = np.zeros((NUM_CLASSES * n,) + SHAPE, np.float32)
    real = RealData.from_arrays(x, np.repeat(np.arange(NUM_CLASSES), n), NUM_CLASSES)
    for ipc in (10, 50):
        for layout in ("data", "class"):
            for d in (int(v) for v in args.devices.split(",")):
                mesh = data_mesh(d) if d > 1 else None
                method = dataclasses.replace(build_method("dm", net, mesh=mesh, ipc=ipc, batch_real=n,
                                                          class_batch=NUM_CLASSES),  # no memory plan: all at once
                                             real_chunk=2**31 - 1, class_split=layout == "class" and d > 1)
                state = method.init(jax.random.key(0), real)
                r, st = replicate((real, state), mesh)
                m = jax.jit(method.update).lower(st, r).compile().memory_analysis()
                mb = lambda v: round(v / 2**20, 1)  # noqa: E731
                rows.append({"ipc": ipc, "batch_real": n, "layout": layout, "devices": d,
                             "arguments_mb": mb(m.argument_size_in_bytes), "temp_mb": mb(m.temp_size_in_bytes),
                             "total_mb": mb(m.argument_size_in_bytes + m.output_size_in_bytes
                                            + m.temp_size_in_bytes)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------- parent
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def gpu_count(timeout: float) -> int:
    """GPUs JAX sees, probed in a child process (so this process never holds GPU memory)."""
    code = "import jax; print(len(jax.devices('gpu')) if jax.default_backend() == 'gpu' else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0
    except (subprocess.TimeoutExpired, ValueError):
        return 0


def run_row(args, platform: str, devices: int, processes: int) -> dict:
    """Start ``processes`` workers (``devices / processes`` devices each) and collect process 0's result."""
    local = devices // processes
    port = free_port()
    procs = []
    for i in range(processes):
        env = dict(os.environ)
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # several workers may share a GPU host
        if platform == "gpu":  # process i sees GPUs i*local .. (i+1)*local-1 of those visible here
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if os.environ.get(
                "CUDA_VISIBLE_DEVICES") else [str(j) for j in range(devices)]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[i * local:(i + 1) * local])
        else:
            env["JAX_PLATFORMS"] = "cpu"
            from jaxdd.utils.distributed import cpu_collective_timeout_flags

            # the device count comes from jax_num_cpu_devices; a loaded machine may delay a process
            # past XLA's 40 s collective wait
            env["XLA_FLAGS"] = cpu_collective_timeout_flags(int(args.timeout))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--platform", platform,
               "--devices", str(devices), "--local-devices", str(local), "--num-processes", str(processes),
               "--process-id", str(i), "--coordinator", f"localhost:{port}", "--ipc", str(args.ipc),
               "--batch-real", str(args.batch_real), "--models", str(args.models),
               "--eval-images", str(args.eval_images), "--repeats", str(args.repeats)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    row = {"platform": platform, "devices": devices, "processes": processes}
    deadline = time.time() + args.timeout
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(1.0, deadline - time.time())))
    except subprocess.TimeoutExpired:
        row["error"] = f"timed out after {args.timeout} s"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if "error" not in row:
        found = [line for line in outs[0][0].splitlines() if line.startswith(MARK)]
        if found and all(p.returncode == 0 for p in procs):
            row.update(json.loads(found[-1][len(MARK):]))
        else:
            err = next((e for (_, e), p in zip(outs, procs) if p.returncode), outs[0][1])
            row["error"] = (err.strip().splitlines() or ["no output"])[-1][:200]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1,2,4,8", help="total devices per row (comma-separated)")
    ap.add_argument("--processes", default="1,2", help="processes per row (comma-separated)")
    ap.add_argument("--platform", choices=("auto", "cpu", "gpu"), default="auto")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--batch-real", type=int, default=32, help="real images per class per DM iteration")
    ap.add_argument("--models", type=int, default=4, help="seeds trained at once in the evaluation epoch")
    ap.add_argument("--eval-images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per row before its workers are killed")
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    ap.add_argument("--memory", action="store_true", help="compiled memory per device of DM at IPC 10/50 instead")
    # worker-only flags
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--local-devices", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    from _bench import report

    if args.memory:
        report("scaling-memory", args, memory_rows(args))
        return 0
    devices = [int(v) for v in args.devices.split(",")]
    processes = [int(v) for v in args.processes.split(",")]
    platforms = ["cpu"] if args.platform == "cpu" else []
    gpus = gpu_count(60.0) if args.platform in ("auto", "gpu") else 0
    if args.platform == "gpu" or gpus:
        platforms.append("gpu")
    load_before = os.getloadavg()[0]
    rows = []
    for platform in platforms:
        base = None
        for p in processes:
            for d in devices:
                if d % p:
                    continue
                if platform == "gpu" and d > gpus:
                    rows.append({"platform": platform, "devices": d, "processes": p,
                                 "error": f"skipped: {gpus} GPU(s) on this host"})
                    continue
                t = time.time()
                row = run_row(args, platform, d, p)
                row["wall_s"] = round(time.time() - t, 1)
                if d == 1 and p == 1 and "error" not in row:
                    base = row
                if base is not None and "error" not in row:
                    row["dm_ratio"] = round(row["dm_s"] / base["dm_s"], 2)
                    row["eval_ratio"] = round(row["eval_s"] / base["eval_s"], 2)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    args.load_1min = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if "cpu" in platforms:
        print("CPU rows: fake devices share the same cores, so the ratios measure sharding and "
              "cross-process overhead, not speed-up.")
    report("scaling", args, rows)
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
