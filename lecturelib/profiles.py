"""Profiles: one setting that sizes every lesson.

``quick`` is the default on a CPU and made the committed notebook outputs;
``full`` is the default when a CUDA GPU is present; ``course`` trained the shipped course checkpoints.
The environment variable
``LECTURELIB_PROFILE`` overrides the default; an explicit argument to
:func:`lecturelib.setup` overrides both.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

ENV_VAR = "LECTURELIB_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Sizes shared by the lessons. Lessons derive their own settings from it.

    image_size:  side of a course scene in pixels.
    n_train / n_test:  scenes in the train / test split.
    batch_size:  scenes per training step.
    epochs:  passes over the train split for a lesson's main model.
    width:  base channel count of the lesson networks.
    amp:  mixed precision on CUDA.
    num_workers:  DataLoader worker processes.
    """

    name: str
    image_size: int
    n_train: int
    n_test: int
    batch_size: int
    epochs: int
    width: int
    amp: bool = False
    num_workers: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def scaled(self, **changes) -> "Profile":
        """A copy with some fields changed (``dataclasses.replace``)."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"Profile.scaled: unknown field(s) {sorted(unknown)}; "
                             f"valid fields are {sorted(asdict(self))}")
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "quick": Profile(name="quick", image_size=64, n_train=512, n_test=128,
                     batch_size=32, epochs=6, width=16, amp=False, num_workers=0),
    "full": Profile(name="full", image_size=128, n_train=4096, n_test=512,
                    batch_size=64, epochs=20, width=32, amp=True, num_workers=4),
    # the course checkpoints (data/checkpoints): many more scenes than a notebook trains on live;
    # lesson 06 raises the image size (see README, "Course checkpoints")
    "course": Profile(name="course", image_size=64, n_train=8192, n_test=512,
                      batch_size=32, epochs=4, width=16, amp=True, num_workers=0),
}


def get_profile(name: str | Profile | None = None, *, cuda_available: bool | None = None) -> Profile:
    """Resolve a profile: explicit name > ``$LECTURELIB_PROFILE`` > quick on CPU / full on GPU.

    Raises ValueError for a name that is not a profile (the message lists the profiles).
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        name = os.environ.get(ENV_VAR) or None
    if name is None:
        if cuda_available is None:
            import torch
            cuda_available = torch.cuda.is_available()
        name = "full" if cuda_available else "quick"
    if not isinstance(name, str):
        raise ValueError(f"profile must be a name such as 'quick' or a Profile, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                       f"(argument profile= or environment variable {ENV_VAR})")
    return PROFILES[key]
