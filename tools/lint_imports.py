"""Checks the import contracts in pyproject.toml (``[tool.importlinter]``) with import-linter.

import-linter finds a package's modules by walking its folder, but rigstream's wings live beside
the core (``rigstream.app`` is ``app/``, ``rigstream.sync`` is ``sync/`` ...; see
``[tool.setuptools.package-dir]``). So the sources are laid out once as Python imports them, in a
temporary folder, and the contracts are checked there. Exit status: lint-imports'.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    config = ROOT / "pyproject.toml"
    package_dirs = tomllib.loads(config.read_text())["tool"]["setuptools"]["package-dir"]
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.is_file():
        print(f"lint_imports: {lint} not found: install the dev extra (bash tools/setup.sh)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rigstream-imports-") as tmp:
        for package, folder in package_dirs.items():
            dest = Path(tmp, *package.split("."))
            for src in (ROOT / folder).rglob("*.py"):
                rel = src.relative_to(ROOT / folder)
                if "__pycache__" in rel.parts:
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / rel)
        env = {**os.environ, "PYTHONPATH": tmp}
        return subprocess.run([str(lint), str(config), "--no-cache"], cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
