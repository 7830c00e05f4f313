"""Shipped data files and their integrity.

``data/MANIFEST`` lists every shipped file with its sha256. :func:`data_file`
returns a verified path or raises an error naming the file and the command that
restores it.

    python -m lecturelib.assets            # verify every file in the manifest
    python -m lecturelib.assets --write-manifest   # after rebuilding data/
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

ENV_DATA_DIR = "LECTURELIB_DATA_DIR"
MANIFEST_NAME = "MANIFEST"
RESTORE_HINT = ("restore it with `git checkout -- data/` from the course repository, "
                "or rebuild it with `apt-get install dataset-fashion-mnist && "
                "python scripts/build_fashion_subset.py && python -m lecturelib.assets --write-manifest`")


def data_dir() -> Path:
    """The course's ``data/`` folder (``$LECTURELIB_DATA_DIR`` overrides)."""
    override = os.environ.get(ENV_DATA_DIR)
    return Path(override) if override else Path(__file__).resolve().parents[1] / "data"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path | None = None) -> dict[str, str]:
    folder = Path(folder) if folder is not None else data_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist; {RESTORE_HINT} "
                                f"(or point ${ENV_DATA_DIR} at a copy of it)")
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing; {RESTORE_HINT}")
    entries = {}
    for line in manifest.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split(maxsplit=1)
        entries[name] = digest
    return entries


@lru_cache(maxsize=None)
def _verified(path_str: str, mtime_ns: int, size: int, expected: str) -> bool:
    return sha256_of(Path(path_str)) == expected


def data_file(name: str, folder: Path | None = None) -> Path:
    """Path of a shipped file after checking it exists and matches its sha256."""
    folder = Path(folder) if folder is not None else data_dir()
    entries = read_manifest(folder)
    if name not in entries:
        raise KeyError(f"{name!r} is not listed in {folder / MANIFEST_NAME}; listed files: {sorted(entries)}")
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} is missing; {RESTORE_HINT}")
    st = path.stat()
    if not _verified(str(path), st.st_mtime_ns, st.st_size, entries[name]):
        raise ValueError(f"data file {path} is corrupted (its sha256 does not match {MANIFEST_NAME}); {RESTORE_HINT}")
    return path


def verify_all(folder: Path | None = None) -> list[str]:
    """Check every file of the manifest; returns the list of problems (empty when all is well)."""
    folder = Path(folder) if folder is not None else data_dir()
    problems = []
    for name in read_manifest(folder):
        try:
            data_file(name, folder)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
    return problems


def write_manifest(folder: Path | None = None) -> Path:
    """Rewrite the manifest: the sha256 of every file under ``folder`` (sub-folders too, e.g. the course
    checkpoints), named by its path relative to ``folder``; README files and hidden files are left out."""
    folder = Path(folder) if folder is not None else data_dir()
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name not in (MANIFEST_NAME, "README.md")
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    lines = ["# sha256 of every shipped data file; verify with: python -m lecturelib.assets"]
    lines += [f"{sha256_of(folder / n)}  {n}" for n in names]
    (folder / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    return folder / MANIFEST_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify (default) or rewrite data/MANIFEST.")
    parser.add_argument("--write-manifest", action="store_true")
    args = parser.parse_args(argv)
    if args.write_manifest:
        print(f"wrote {write_manifest()}")
        return 0
    problems = verify_all()
    for p in problems:
        print("FAIL", p)
    if not problems:
        print(f"all {len(read_manifest())} data files verified")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
