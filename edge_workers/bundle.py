"""Stage a Python worker's bundle: its entry module plus every first-party module it imports.

Python Workers import modules relative to the main module's directory, and the main module must sit
at the bundle's root. Each worker's wrangler.toml runs this as its ``[build]`` command from the
worker's directory; the staged ``build/`` holds ``entry.py`` and, for example,
``edge_workers/core/gateway.py`` at the same relative paths as in the repository, found by walking the
imports (standard library and runtime modules are left out).

    python3 ../bundle.py [--entry entry.py] [--out build]
"""

from __future__ import annotations

import argparse
import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Written into every staged bundle: ``stage`` empties only directories that carry it.
MARKER = ".agistack-bundle"


def module_file(name: str, root: Path = REPO_ROOT) -> Path | None:
    """The repository file that defines module ``name``, or None if it is not first-party."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            yield base
            # "from pkg import name" may name a submodule.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def collect(entry: Path, root: Path = REPO_ROOT) -> set[Path]:
    """Every first-party module file ``entry`` needs, packages' ``__init__.py`` included."""
    found: set[Path] = set()
    pending = [(entry, "")]
    while pending:
        path, module = pending.pop()
        for name in _imported_names(path, module):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                file = module_file(prefix, root)
                if file is not None and file not in found:
                    found.add(file)
                    pending.append((file, prefix))
    return found


def stage(entry: Path, out: Path, root: Path = REPO_ROOT) -> list[Path]:
    """Write the bundle to ``out`` (emptied first); return the staged files relative to ``out``."""
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise SystemExit(f"refusing to empty {out}: it is not a bundle this script staged")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("staged by edge_workers/bundle.py; rebuilt on every build\n", encoding="utf-8")
    staged = [Path("entry.py")]
    shutil.copyfile(entry, out / "entry.py")
    for file in sorted(collect(entry, root)):
        relative = file.relative_to(root)
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, out / relative)
        staged.append(relative)
    return staged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--entry", type=Path, default=Path("entry.py"))
    parser.add_argument("--out", type=Path, default=Path("build"))
    args = parser.parse_args()
    staged = stage(args.entry.resolve(), args.out.resolve())
    print(f"staged {len(staged)} modules in {args.out}")


if __name__ == "__main__":
    main()
