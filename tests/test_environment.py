"""environment.yml (conda users) lists exactly the dependencies of pyproject.toml."""
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {norm(r) for r in project["dependencies"]}
    for extra in ("test", "dev", "site"):
        wanted |= {norm(r) for r in project["optional-dependencies"][extra]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "- pip:")
    pip = [ln.strip()[2:] for ln in lines[start + 1:] if ln.strip().startswith("- ")]
    got = {norm(r) for r in pip if not r.startswith("-e")}
    assert "-e ." in pip, "environment.yml must install the package itself (-e .)"
    assert got == wanted, f"only in environment.yml: {sorted(got - wanted)}; only in pyproject: {sorted(wanted - got)}"
    py = next(ln for ln in lines if "python=" in ln).split("=")[1]
    assert tuple(map(int, py.split("."))) >= tuple(map(int, re.findall(r"\d+", project["requires-python"])))
