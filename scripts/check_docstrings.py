"""Fail when a public name of a documented module has no docstring or no example.

The API reference renders every public name from its docstring, and mkdocstrings renders a
name without one silently; this check makes that an error. Public: the names in a module's
``__all__`` (or, without one, those defined there without a leading underscore) and their
public methods and properties. Every public function and class (not each method) must also
show a ``>>>`` example, which the test suite runs as a doctest (``pytest`` collects
``jaxbuf`` with ``--doctest-modules``), so the reference cannot drift from the code. Run from
the repository root: ``python scripts/check_docstrings.py``.
"""

from __future__ import annotations

import sys

import griffe

MODULES = (
    "jaxbuf",
    "jaxbuf.returns",
    "jaxbuf.prioritized",
    "jaxbuf.checkpoint",
    "jaxbuf.sharding",
    "jaxbuf.trajectory",
    "jaxbuf.compat.tianshou",
    "jaxbuf.datasets",
    "jaxbuf.concurrent",
    "jaxbuf.errors",
)


def public_members(module: griffe.Module) -> list[griffe.Object | griffe.Alias]:
    names = (
        module.exports
        if module.exports is not None
        else [n for n, m in module.members.items() if not n.startswith("_") and not m.is_alias]
    )
    return [module.members[str(n)] for n in names if str(n) in module.members]


def _has_example(target) -> bool:
    if ">>>" in target.docstring.value:
        return True
    # An exception class is shown by the example of the code that raises it (errors module).
    return target.is_class and any(
        getattr(b, "name", str(b)).endswith(("Error", "Exception", "Timeout")) for b in target.bases
    )


def missing(obj, path: str, seen: set[str]) -> list[str]:
    try:
        target = obj.final_target if obj.is_alias else obj
    except griffe.AliasResolutionError:
        return []
    if target.path in seen or target.is_module:
        return []
    seen.add(target.path)
    out = [] if target.docstring else [path]
    needs_example = target.docstring and (target.is_class or target.is_function)
    if needs_example and not _has_example(target):
        out.append(f"{path} (no >>> example)")
    if target.is_class:
        for name, member in target.all_members.items():
            if name.startswith("_"):
                continue
            try:
                m = member.final_target if member.is_alias else member
            except griffe.AliasResolutionError:
                continue
            if (m.is_function or m.is_attribute and "property" in m.labels) and not m.docstring:
                out.append(f"{path}.{name}")
    return out


def main() -> int:
    loader = griffe.GriffeLoader(search_paths=["."])
    for name in MODULES:
        loader.load(name)
    loader.resolve_aliases(implicit=True, external=None)
    seen: set[str] = set()
    problems: list[str] = []
    for name in MODULES:
        module = loader.modules_collection[name]
        for member in public_members(module):
            problems += missing(member, f"{name}.{member.name}", seen)
    for p in problems:
        print(f"missing: {p}")
    print(f"{len(problems)} public name(s) without a docstring or an example")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
