"""One process of a multi-process CLI run for tests/test_multiprocess.py (not a test module).

    python tests/multiprocess_worker.py OUT DATASET PHASES [--devices N] [--resume] [--hang-after-checkpoint S]
        [--coordinator HOST:PORT --num-processes P --process-id I]

Runs ``jaxdd`` subcommands one after another in this process (the distributed runtime starts
once): ``distill`` (DM, 6 iterations, checkpoints every 2), ``score`` (loss of 4 models after 1
epoch), ``eval`` (4 seeds on the distilled set). PHASES is a comma-separated subset. Exits with
the first non-zero status. ``--hang-after-checkpoint S``: every process but the primary stops
(sleeps) once its checkpoint of step S is saved, until the test kills it, so that the kill lands
at the same point whatever the machine's load (not after the run has gone on or finished).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxdd.cli import main  # noqa: E402

ARCH = "mlp-w16"


def commands(out: Path, dataset: str, devices: list[str], resume: list[str]) -> dict[str, list[str]]:
    return {
        "distill": ["distill", "--dataset", dataset, "--model", ARCH, "--ipc", "4", "--iterations", "6",
                    "--batch-real", "4", "--checkpoint-every", "2", "--eval-every", "0", "--no-eval",
                    "--no-progress", "--out", str(out / "dm"), *devices, *resume],
        "score": ["score", "--dataset", dataset, "--score", "loss", "--model", ARCH, "--models", "4", "--epochs", "1",
                  "--train-batch", "8", "--batch-size", "8", "--out", str(out / "scores.npz"), *devices],
        "eval": ["eval", "--distilled", str(out / "dm" / "distilled"), "--dataset", dataset, "--archs", ARCH,
                 "--models", "4", "--epochs", "2", "--out", str(out / "eval.json"), *devices],
    }


if __name__ == "__main__":
    out, dataset, phases, *rest = sys.argv[1:]
    dist, devices, resume, hang_after = [], [], [], None
    while rest:
        flag = rest.pop(0)
        if flag == "--resume":
            resume = ["--resume"]
        elif flag == "--devices":
            devices = ["--devices", rest.pop(0)]
        elif flag == "--hang-after-checkpoint":
            hang_after = int(rest.pop(0))
        else:
            dist += [flag, rest.pop(0)]
    if hang_after is not None:
        import jax

        from jaxdd.utils.checkpoint import Checkpointer

        save = Checkpointer.save

        def save_then_hang(self, step, *args, **kwargs):
            path = save(self, step, *args, **kwargs)
            if step == hang_after and jax.process_index() != 0:
                print(f"process {jax.process_index()}: checkpoint {step} saved, waiting to be killed", flush=True)
                time.sleep(3600)
            return path

        Checkpointer.save = save_then_hang
    cmds = commands(Path(out), dataset, devices, resume)
    for phase in phases.split(","):
        rc = main(cmds[phase] + dist)
        print(f"phase {phase}: exit {rc}", flush=True)
        if rc:
            sys.exit(rc)
