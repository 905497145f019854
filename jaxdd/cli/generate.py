"""``jaxdd generate``: a distilled set sampled from a diffusion prior, unguided or with DAG / ACS guidance.

    jaxdd generate --prior priors/NAME --ipc K [--guidance none|dag|acs]
                   [--target real|uniform|hill|slope|cliff|FILE] [--curricula K] [--scale S]
                   [--window LO,HI] [--pool-factor F] --out sets/NAME [--resume]

``dag`` guides every sample toward a target difficulty (1 - p(y|x) of the DGS classifier, drawn
from the real histogram or a preset); ``acs`` generates K curricula, each guided to be hard for a
discriminator trained on the earlier ones. ``--pool-factor F`` generates F x IPC per class and
chooses IPC by DGS. Writes to OUT: ``distilled.npz`` + ``distilled.json`` (``jaxdd eval``),
``pool/`` (``jaxdd sample``), ``samples.png``, ``difficulty.png`` (target vs achieved difficulty
per class), ``generate.json``, ``classifier/`` and, for ACS, ``checkpoints/`` (``--resume``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxdd.cli._common import add_seed_arg


def _window(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI such as 30,45 (got {text!r})") from None
    return lo, hi


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample a distilled set from a diffusion prior (none | DAG | ACS)",
                              description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, help="prior folder (from `jaxdd prior train`)")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--guidance", default="none", choices=["none", "dag", "acs"])
    p.add_argument("--target", default="real", help="difficulty target: real | uniform | hill | slope | cliff | a file "
                   "of 10 bin weights (DAG guidance, DGS selection, and the difficulty plot)")
    p.add_argument("--curricula", type=int, default=None, help="ACS curricula K (must divide IPC; default 2)")
    p.add_argument("--scale", type=float, default=None, help="guidance step s relative to the noise prediction "
                   "(default 0.05 for dag and acs)")
    p.add_argument("--deviation", type=float, default=None, help="ACS deviation-term step (default 0.02)")
    p.add_argument("--window", type=_window, default=None, help="guided steps LO,HI counted down from STEPS-1 "
                   "(default 0.6-0.9 of STEPS: 30,45 of 50)")
    p.add_argument("--pool-factor", type=int, default=1, help="generate F x IPC per class and choose IPC by DGS")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale (default 2)")
    p.add_argument("--disc-epochs", type=int, default=None, help="ACS discriminator epochs (default 300)")
    p.add_argument("--disc-model", default=None, help="ACS discriminator network (default convnet)")
    p.add_argument("--dataset", default=None, help="dataset the prior was trained on (default: the name in its "
                   "prior.json)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classifier", default=None, help="DGS difficulty classifier folder: loaded if it exists, else "
                   "trained and saved there (default OUT/classifier)")
    p.add_argument("--clf-model", default="convnet", help="classifier network when it is trained (default convnet)")
    p.add_argument("--clf-epochs", type=int, default=None, help="classifier training epochs (default 5)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue a killed ACS run in OUT")
    p.add_argument("--no-progress", action="store_true")
    add_seed_arg(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.generative import load_prior
    from jaxdd.sample.guided import GenerateConfig, generate_set
    from jaxdd.utils.io import check_output, format_table

    check_output(args.out, folder=True)
    config = GenerateConfig(ipc=args.ipc, guidance=args.guidance, target=args.target,
                            curricula=args.curricula or (2 if args.guidance == "acs" else 1), scale=args.scale,
                            window=args.window, pool_factor=args.pool_factor, steps=args.steps, cfg_scale=args.cfg,
                            deviation=args.deviation, disc_epochs=args.disc_epochs,
                            disc_model=args.disc_model, batch_size=args.batch_size,
                            seed=args.seed)
    prior, params, meta = load_prior(args.prior)
    name = args.dataset or meta.get("dataset", {}).get("name")
    if not name:
        raise ValueError(f"{args.prior}/prior.json names no dataset: pass --dataset NAME")
    ds = load_dataset(name, data_dir=args.data_dir)
    summary = generate_set(prior, params, ds, config, args.out, classifier_dir=args.classifier,
                           classifier_model=args.clf_model, classifier_epochs=args.clf_epochs,
                           prior_path=str(args.prior), dataset_id=name, resume=args.resume,
                           progress=not args.no_progress)
    rows = [{**r, "target_mean_d": f"{r['target_mean_d']:.4f}", "achieved_mean_d": f"{r['achieved_mean_d']:.4f}",
             "kl_target_achieved": f"{r['kl_target_achieved']:.3f}"} for r in summary["per_class"]]
    print(format_table(rows))
    out = Path(args.out)
    print(f"\n{summary['generated']} images generated in {summary['seconds_generate']:.1f} s "
          f"({summary['seconds_per_image']:.3f} s/image); mean KL(target || achieved) {summary['kl_mean']:.3f}; "
          f"within-class diversity {summary['diversity']:.3f}, coverage of the real test set "
          f"{100 * summary['coverage']:.1f} % (classifier features)")
    print(f"wrote {out}/distilled.npz, distilled.json, pool/, samples.png, difficulty.png, generate.json")
    return 0
