"""The first cell of every notebook: ``course = lecturelib.setup()``."""
from __future__ import annotations

import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

from .profiles import Profile, get_profile


@dataclass(frozen=True)
class Course:
    """What a notebook's set-up cell returns: the seed, device and profile to pass down."""

    seed: int
    device: torch.device
    profile: Profile

    @property
    def amp(self) -> bool:
        """Mixed precision only when the profile asks for it and the device is CUDA."""
        return self.profile.amp and self.device.type == "cuda"


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and CUDA) random number generators."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(int(seed))


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; any other value is checked."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device={device!r} is not a device name; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for CUDA but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return dev


def setup(seed: int = 0, profile: str | Profile | None = None, device: str | torch.device = "auto",
          *, verbose: bool = True, expected_minutes: float | None = None) -> Course:
    """Seed every RNG, choose the device and the profile, print what was chosen.

    Args:
        seed: seed for Python, NumPy and PyTorch.
        profile: ``"quick"``, ``"full"``, a :class:`Profile`, or None (``$LECTURELIB_PROFILE``,
            else quick on CPU / full on GPU).
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        verbose: print versions, device and profile.
        expected_minutes: the notebook's measured quick-profile run time, printed as a reminder.

    Also applies the course's figure style (:func:`lecturelib.viz.use_course_style`).
    """
    set_seed(seed)
    from .viz import use_course_style

    use_course_style()
    dev = choose_device(device)
    prof = get_profile(profile, cuda_available=(dev.type == "cuda"))
    course = Course(seed=int(seed), device=dev, profile=prof)
    if verbose:
        import torchvision

        from . import __version__
        print(f"lecturelib {__version__} | torch {torch.__version__} | torchvision {torchvision.__version__} "
              f"| python {platform.python_version()}")
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device: {name} | profile: {prof.name} (image {prof.image_size}px, "
              f"{prof.n_train} train / {prof.n_test} test scenes, {prof.epochs} epochs, width {prof.width}) "
              f"| seed {seed}")
        if expected_minutes is not None:
            print(f"expected run time with the quick profile on a 2-core CPU: about {expected_minutes:g} min")
    return course
