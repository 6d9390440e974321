"""The core's contract in pyproject.toml names every module of the core, so a new core module is
checked by ``lint-imports`` too (the layers contract covers the wings by their package names)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_the_core_contract_lists_every_core_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (core,) = [c for c in contracts if c["type"] == "forbidden"]
    on_disk = {f"rigstream.{p.stem}" for p in (ROOT / "rigstream").glob("*.py")
               if p.stem not in ("__init__", "__main__")}  # __main__ is the CLI's entry: it imports app
    assert set(core["source_modules"]) == on_disk
    wings = {k.split(".")[1] for k in config["tool"]["setuptools"]["package-dir"] if k.count(".") == 1}
    (layered,) = [c for c in contracts if c["type"] == "layers"]
    layers = {w.strip() for layer in layered["layers"] for w in layer.split("|")}
    assert layers == wings and {m.split(".")[1] for m in core["forbidden_modules"]} == wings
