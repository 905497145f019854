"""No upward import: every module of ``jaxdd`` imports only its own layer or lower ones
(the layer order of CONTRIBUTING.md). Static: every ``import`` / ``from ... import`` statement,
function-level ones included, and ``importlib.import_module("jaxdd....")`` with a literal name."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Layers, lowest first; a module may import its own layer and the layers before it.
LAYERS = (
    ("data", "models", "augment", "utils"),
    ("train",),
    ("evaluate", "difficulty"),
    ("prune", "experts", "generative"),
    ("distill", "sample"),
    ("cli", "configs", "__main__"),
)
RANK = {name: i for i, group in enumerate(LAYERS) for name in group}
#: Top-level folders of the repository above the package: jaxdd never imports them.
OUTSIDE = ("experiments", "benchmarks", "tests", "colab")


def _imported(tree: ast.AST, module: str, is_package: bool):
    """(line, dotted name) of every module named by an import in ``tree``; ``module`` is the
    dotted name of the file (``jaxdd.distill.mtt``), needed to resolve relative imports."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, name
            for alias in node.names:  # `from jaxdd import distill` / `from . import x` name modules too
                yield node.lineno, f"{name}.{alias.name}"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            yield node.lineno, node.args[0].value


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Violations in the source of ``module`` (a dotted name under ``jaxdd``): one line each,
    naming the module, the line, the import and both layers."""
    parts = module.split(".")
    if parts[0] != "jaxdd":
        raise ValueError(f"not a jaxdd module: {module!r}")
    if len(parts) == 1:  # jaxdd/__init__.py: the root imports nothing of the package
        own = -1
    elif parts[1] not in RANK:
        return [f"{module}: jaxdd.{parts[1]} has no layer; add it to LAYERS here and in CONTRIBUTING.md"]
    else:
        own = RANK[parts[1]]
    where = f"layer {own} ({', '.join(LAYERS[own])})" if own >= 0 else "the root package (imports no layer)"
    out, seen = [], set()
    for line, name in _imported(ast.parse(source), module, is_package):
        target = name.split(".")
        if target[0] in OUTSIDE and (line, target[0]) not in seen:
            seen.add((line, target[0]))
            out.append(f"{module} (line {line}) imports {name}, which lies outside the package")
        if target[0] != "jaxdd" or len(target) < 2 or target[1] not in RANK or (line, target[1]) in seen:
            continue  # third-party, the root package itself, an attribute (jaxdd.__version__), or said already
        if RANK[target[1]] > own:
            seen.add((line, target[1]))
            out.append(f"{module} (line {line}) imports {name}: layer {RANK[target[1]]} "
                       f"({', '.join(LAYERS[RANK[target[1]]])}) is above {where}")
    return out


def _modules():
    for path in sorted((ROOT / "jaxdd").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        is_package = rel[-1] == "__init__"
        yield path, ".".join(rel[:-1] if is_package else rel), is_package


def test_no_module_imports_a_higher_layer():
    found = [v for path, module, pkg in _modules() for v in upward_imports(path.read_text(), module, pkg)]
    assert not found, "upward imports (see the layers in CONTRIBUTING.md):\n" + "\n".join(found)


def test_every_subpackage_has_a_layer():
    names = {p.stem if p.suffix == ".py" else p.name for p in (ROOT / "jaxdd").iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem != "__init__"}
    assert names <= set(RANK), f"no layer for {sorted(names - set(RANK))}: add them to LAYERS and CONTRIBUTING.md"



def test_contributing_shows_these_layers():
    """CONTRIBUTING.md's layer table lists the same layers in the same order."""
    text = (ROOT / "CONTRIBUTING.md").read_text().split("## Layers", 1)[1].split("```")[1]
    rows = [re.split(r"\s{2,}", line.strip())[1] for line in text.splitlines() if re.match(r"\s*\d\s", line)]
    documented = [tuple(n.strip() for n in re.sub(r"\(.*?\)", "", row).split(",")) for row in rows]
    expected = [tuple(n for n in group if n != "__main__") for group in LAYERS]
    expected[-1] += ("experiments",)  # the scripts above the package (jaxdd never imports them)
    assert documented == expected, documented


@pytest.mark.parametrize("module, pkg, source, culprit", [
    ("jaxdd.train", False, "def f():\n    from jaxdd.distill import losses\n", "jaxdd.distill"),  # function-level
    ("jaxdd.data.sampler", False, "from ..evaluate.protocol import evaluate_set\n", "jaxdd.evaluate.protocol"),
    ("jaxdd.utils", True, "from .. import sample\n", "jaxdd.sample"),  # relative, from a package __init__
    ("jaxdd.generative.ld3m", False, "import jaxdd.distill.base as b\n", "jaxdd.distill.base"),
    ("jaxdd.difficulty.drivers", False, "from jaxdd import prune\n", "jaxdd.prune"),
    ("jaxdd.sample.pool", False, "import importlib\nm = importlib.import_module('jaxdd.cli.sample')\n",
     "jaxdd.cli.sample"),
    ("jaxdd.distill.driver", False, "from experiments import common\n", "experiments"),
    ("jaxdd", True, "from jaxdd.models import create_network\n", "jaxdd.models"),
])
def test_upward_imports_are_found(module, pkg, source, culprit):
    """The check fails on synthetic modules that import upward, and names module and import."""
    found = upward_imports(source, module, pkg)
    assert found and module in found[0] and culprit in found[0], found


def test_same_layer_and_downward_imports_pass():
    src = ("from jaxdd.models import create_network\nfrom jaxdd.train import Trainer\nimport jaxdd\n"
           "from jaxdd import __version__\nfrom .losses import cross_entropy\nfrom jaxdd.sample import dgs\n"
           "def f():\n    from jaxdd.generative import prior\n")
    assert upward_imports(src, "jaxdd.distill.methods") == []
    assert upward_imports("from jaxdd.augment import dsa\n", "jaxdd.data.sampler") == []  # same layer
    with pytest.raises(ValueError, match="not a jaxdd module"):
        upward_imports("", "experiments.common")
