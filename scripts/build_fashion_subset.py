"""Build data/fashion_items.npz: a fixed subset of Fashion-MNIST items.

Source: the Debian package ``dataset-fashion-mnist`` (Zalando Research, MIT
licence), installed with ``apt-get install dataset-fashion-mnist``. The script
takes the first ``--per-class`` train-split items of every class for the
course's train items and the first ``--test-per-class`` t10k-split items for
its test items, so train and test items are disjoint by construction. The
sha256 of every source file is stored inside the npz and in data/SOURCES.

Usage:  python scripts/build_fashion_subset.py [--source DIR] [--out data/]
Then:   python -m lecturelib.assets --write-manifest
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST container format) into a uint8 array."""
    raw = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic:#x})")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def take_per_class(images: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.concatenate([np.flatnonzero(labels == c)[:k] for c in range(10)])
    keep.sort()
    return images[keep], labels[keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)

    paths = {key: args.source / name for key, name in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        print("missing source files: " + ", ".join(missing), file=sys.stderr)
        print("install them with: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 1
    hashes = {key: sha256(p) for key, p in paths.items()}
    tr_x, tr_y = take_per_class(read_idx(paths["train_images"]), read_idx(paths["train_labels"]), args.per_class)
    te_x, te_y = take_per_class(read_idx(paths["test_images"]), read_idx(paths["test_labels"]), args.test_per_class)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "fashion_items.npz"
    np.savez_compressed(
        out,
        train_images=tr_x, train_labels=tr_y.astype(np.uint8),
        test_images=te_x, test_labels=te_y.astype(np.uint8),
        source_files=np.array([FILES[k] for k in FILES]),
        source_sha256=np.array([hashes[k] for k in FILES]),
    )
    lines = [f"{hashes[k]}  {FILES[k]}" for k in FILES]
    (args.out / "SOURCES").write_text(
        "# sha256 of the Debian dataset-fashion-mnist files fashion_items.npz was built from\n"
        + "\n".join(lines) + "\n"
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): "
          f"{len(tr_y)} train items, {len(te_y)} test items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
