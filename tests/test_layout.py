"""The package's shape: no import cycles, no oversized module, one neighbour list per cutoff."""

from __future__ import annotations

import ast
import os

import numpy as np
import pytest
from ase.build import bulk

import gapx
from gapx import _core
from gapx.neighbors import StructureContext

PACKAGE = os.path.dirname(os.path.abspath(gapx.__file__))
MAX_MODULE_LINES = 500


def _modules() -> dict[str, str]:
    """Dotted module name -> path, for every Python file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = path
    return out


def _imports(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """gapx modules that ``module`` imports anywhere in its body (functions included)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            children = [f"{base}.{alias.name}" for alias in node.names]
            names = children if node.module is None else [base, *children]
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # A package's __init__ re-exporting its children is not a cycle of logic: drop the edges
    # from a package to its own submodules.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
    assert graph["gapx.model"], "the import graph is empty: the parser found nothing"
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_over_the_size_limit():
    sizes = {m: sum(1 for _ in open(p)) for m, p in _modules().items()}
    assert len(sizes) > 20
    too_long = {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, too_long


def _counting_builds(monkeypatch) -> list[float]:
    built = []
    real = _core.build_neighbor_list

    def counted(*args, **kwargs):
        built.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(_core, "build_neighbor_list", counted)
    return built


@pytest.fixture(scope="module")
def two_body_soap_model():
    from structures import emt_labelled

    rng = np.random.default_rng(5)
    frames = []
    for _ in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.1, rng=rng)
        frames.append(emt_labelled(atoms))
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=3.5, n_sparse=5),
            gapx.SOAP(species=["Cu"], cutoff=3.5, n_max=3, l_max=2, n_sparse=10),
        ],
        verbose=False,
    )
    model.fit(frames)
    return model


def test_predict_builds_one_neighbour_list_for_equal_cutoffs(two_body_soap_model, monkeypatch):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=3)
    expected = two_body_soap_model.predict(atoms, std=False)
    built = _counting_builds(monkeypatch)
    again = two_body_soap_model.predict(atoms, std=False)
    assert built == [3.5]  # overlap check, TwoBody and SOAP share one list
    np.testing.assert_array_equal(again["forces"], expected["forces"])


def test_context_builds_each_distinct_cutoff_once(monkeypatch):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    built = _counting_builds(monkeypatch)
    context = StructureContext(atoms)
    first = context.neighbors(3.0)
    assert context.neighbors(3.0) is first
    context.neighbors(4.0)
    context.check_no_overlap()
    assert built == [3.0, 4.0]
    assert context.n_built == 2


def test_soap_with_a_shared_list_equals_soap_alone():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=2)
    soap = gapx.SOAP(species=["Si"], cutoff=3.0, n_max=3, l_max=2)
    context = StructureContext(atoms)
    X, dX = soap.compute(atoms, gradients=True, context=context)
    X0, dX0 = soap.compute(atoms, gradients=True)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(dX.values, dX0.values)
    arrays = context.positions, context.cell, context.pbc, context.numbers
    with pytest.raises(ValueError, match="not the SOAP cutoff"):
        soap._core.compute(*arrays, neighbors=context.neighbors(4.0))
