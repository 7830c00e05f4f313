"""Execute notebooks in place (fresh kernel, top to bottom) and report each one's wall time.

    LECTURELIB_PROFILE=quick python scripts/run_notebooks.py notebooks/*.ipynb

The committed outputs of the course are made this way, with the quick profile. Widgets that only work with a
live kernel (the transposed-convolution explorer) are not stored: their output keeps its static picture. The
kernelspec metadata is the one JupyterLab writes, so that opening a notebook does not mark it modified.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

# this script and the notebooks' kernels import this checkout's lecturelib, whichever one is installed
ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                     if p and p != ROOT])

from lecturelib.widgets import strip_live_widgets  # noqa: E402


def kernelspec_metadata(name: str = "python3") -> dict:
    """The notebook metadata JupyterLab writes for the kernel ``name`` (its display name included)."""
    spec = KernelSpecManager().get_kernel_spec(name)
    return {"display_name": spec.display_name, "language": spec.language, "name": name}


def run(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    strip_live_widgets(nb)
    nb.metadata["kernelspec"] = kernelspec_metadata()
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    total = 0.0
    for path in args.notebooks:
        if not path.is_file():
            print(f"{path}: no such notebook", file=sys.stderr)
            return 1
        seconds = run(path, args.timeout)
        total += seconds
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{path.name}: {seconds:.1f} s (largest kernel so far: {peak:.0f} MiB peak RSS)", flush=True)
    print(f"total: {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
