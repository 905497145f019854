"""jaxdd generate: a distilled set sampled from a diffusion prior, unguided or with DAG / ACS guidance.

    jaxdd generate --prior runs/priors/fashion_mnist --ipc 10 --out runs/gen10
    jaxdd generate --prior runs/priors/fashion_mnist --ipc 10 --guidance dag --target hill --out runs/dag10
    jaxdd generate --prior runs/priors/fashion_mnist --ipc 10 --guidance acs --curricula 2 --out runs/acs10

dag guides every sample toward a target difficulty (1 - p(y|x) of the DGS classifier, drawn from
the real histogram or a preset); acs generates K curricula, each guided to be hard for a
discriminator trained on the earlier ones. --pool-factor F generates F x IPC per class and
chooses IPC by DGS. Writes to OUT: distilled.npz + distilled.json (jaxdd eval), pool/ (jaxdd
sample), samples.png, difficulty.png (target vs achieved difficulty per class), generate.json,
classifier/ and, for ACS, checkpoints/ (--resume).
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import add_config_arg, add_model_arg, add_parser, add_seed_arg


def _window(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI such as 30,45 (got {text!r})") from None
    return lo, hi


def register(subparsers) -> None:
    p = add_parser(subparsers, "generate", __doc__, "sample a distilled set from a diffusion prior (none | DAG | ACS)")
    add_config_arg(p)
    p.add_argument("--prior", required=True, help="prior folder (from jaxdd prior train)")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--guidance", default="none", choices=["none", "dag", "acs"],
                   help="guidance: none, difficulty-aware (dag) or adversarial curricula (acs)")
    p.add_argument("--target", default="real", help="difficulty target: real | uniform | hill | slope | cliff | a file "
                   "of 10 bin weights (DAG guidance, DGS selection, and the difficulty plot)")
    p.add_argument("--curricula", type=int, default=None, help="ACS curricula K (must divide IPC; default: 2)")
    p.add_argument("--scale", type=float, default=None, help="guidance step s relative to the noise prediction "
                   "(default: 0.05 for dag and acs)")
    p.add_argument("--deviation", type=float, default=None, help="ACS deviation-term step (default: 0.02)")
    p.add_argument("--window", type=_window, default=None, help="guided steps LO,HI counted down from STEPS-1 "
                   "(default: 0.6-0.9 of STEPS, 30,45 of 50)")
    p.add_argument("--pool-factor", type=int, default=1, help="generate F x IPC per class and choose IPC by DGS")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--disc-epochs", type=int, default=None, help="ACS discriminator epochs (default: 300)")
    p.add_argument("--disc-model", default=None, help="ACS discriminator network (default: convnet)")
    p.add_argument("--dataset", default=None, help="dataset the prior was trained on (default: the name in its "
                   "prior.json)")
    p.add_argument("--data-dir", default=None, help="where the dataset's files live")
    p.add_argument("--classifier", default=None, help="DGS difficulty classifier folder: loaded if it exists, else "
                   "trained and saved there (default: OUT/classifier)")
    add_model_arg(p, "difficulty classifier network when it is trained", old=("--clf-model",))
    p.add_argument("--clf-epochs", type=int, default=None, help="classifier training epochs (default: 5)")
    p.add_argument("--batch-size", type=int, default=100, help="images sampled per batch")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue a killed ACS run in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_arg(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from jaxdd.cli._common import settings
    from jaxdd.sample.run import run_generate

    run_generate(settings(args), args.out)
    return 0
