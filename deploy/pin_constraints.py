"""Write deploy/constraints.txt: `==` pins of dlforge's runtime dependencies and of everything they pull in.

Versions are those installed in the environment that runs this script (`make constraints` uses .venv), so the
images install what the tests ran against. Local version labels are dropped (`torch==2.13.0`, not `+cpu`): under
PEP 440 a pin without a label also matches `2.13.0+cu128`, so one file serves the CPU and the CUDA image.
Markers are evaluated for this interpreter (CPython 3.11 on Linux, as in the images); a CUDA torch's own extra
dependencies (nvidia-*, triton) are not pinned here: they come from the PyTorch index with that torch.

    python deploy/pin_constraints.py [--check]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "deploy" / "constraints.txt"
HEADER = """\
# Pinned runtime dependencies of dlforge and everything they pull in, shared by both images (deploy/install.sh
# passes `-c` with this file). Generated, do not edit: `make constraints` (python deploy/pin_constraints.py).
"""


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})


def pins(top: list[Requirement]) -> dict[str, str]:
    """{canonical name: installed public version} over the dependency closure of `top`."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(req, frozenset()) for req in top]
    while todo:
        req, parent_extras = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if not _applies(req, parent_extras) or key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(name)
        found[name] = Version(dist.version).public
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    found.pop("dlforge", None)
    return dict(sorted(found.items()))


def render() -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins(runtime_requirements()).items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if deploy/constraints.txt is out of date")
    text = render()
    if parser.parse_args().check:
        if OUTPUT.read_text() != text:
            print(f"error: {OUTPUT.relative_to(ROOT)} is out of date; run `make constraints`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({text.count(chr(10)) - HEADER.count(chr(10))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
