"""Check a built jaxdd wheel: its version is jaxdd/__init__.__version__, and it holds the data files
the package reads at run time (the embedded default dataset, the model fixtures) and the CLI entry point.

    python3 .ci/check_wheel.py dist/jaxdd-*.whl
"""

import ast
import sys
import zipfile
from pathlib import Path

REQUIRED = ["jaxdd/data/embedded/fashion_mnist_small.npz", "jaxdd/data/embedded/README.md",
            "jaxdd/models/fixtures/convnet_mnist.npz", "jaxdd/models/fixtures/convnet_cifar.npz",
            "jaxdd/utils/metric_log.py", "jaxdd/cli/__init__.py", "jaxdd/configs/dm_fmnist_ipc10.py"]


def main(wheel: str) -> int:
    root = Path(__file__).resolve().parents[1]
    tree = ast.parse((root / "jaxdd" / "__init__.py").read_text())
    version = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                   and any(getattr(t, "id", None) == "__version__" for t in n.targets))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"jaxdd-{version}.dist-info/METADATA").decode() if f"jaxdd-{version}.dist-info/METADATA" \
            in names else ""
        entry = z.read(f"jaxdd-{version}.dist-info/entry_points.txt").decode() if meta else ""
    problems = [f"missing {n}" for n in REQUIRED if n not in names]
    if f"Version: {version}\n" not in meta:
        problems.append(f"no METADATA for version {version} (jaxdd.__version__)")
    if "jaxdd = jaxdd.cli:main" not in entry:
        problems.append("no `jaxdd` console script")
    for p in problems:
        print(f"{wheel}: {p}", file=sys.stderr)
    if not problems:
        print(f"{Path(wheel).name}: version {version}, {len(names)} files, data files and console script present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
