"""One process of a multi-process CLI run for tests/test_multiprocess.py (not a test module).

    python tests/multiprocess_worker.py OUT DATASET PHASES [--devices N] [--resume]
        [--coordinator HOST:PORT --num-processes P --process-id I]

Runs ``jaxdd`` subcommands one after another in this process (the distributed runtime starts
once): ``distill`` (DM, 6 iterations, checkpoints every 2), ``score`` (loss of 4 models after 1
epoch), ``eval`` (4 seeds on the distilled set). PHASES is a comma-separated subset. Exits with
the first non-zero status.
"""

import sys
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
    dist, devices, resume = [], [], []
    while rest:
        flag = rest.pop(0)
        if flag == "--resume":
            resume = ["--resume"]
        elif flag == "--devices":
            devices = ["--devices", rest.pop(0)]
        else:
            dist += [flag, rest.pop(0)]
    cmds = commands(Path(out), dataset, devices, resume)
    for phase in phases.split(","):
        rc = main(cmds[phase] + dist)
        print(f"phase {phase}: exit {rc}", flush=True)
        if rc:
            sys.exit(rc)
