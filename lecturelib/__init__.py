"""lecturelib: the engine behind the segmentation course's notebooks."""
from __future__ import annotations

__version__ = "0.1.0"

from .profiles import PROFILES, Profile, get_profile  # noqa: E402
from .session import Course, choose_device, set_seed, setup  # noqa: E402


def show_source(obj) -> None:
    """Print the source code of a lecturelib function or class (like ``??name`` in Jupyter)."""
    import inspect

    try:
        src = inspect.getsource(obj)
    except (TypeError, OSError) as exc:
        raise ValueError(f"show_source: no Python source for {obj!r} ({exc}); pass a function or class") from exc
    print(f"# {inspect.getsourcefile(obj)}")
    print(src)


__all__ = ["PROFILES", "Profile", "get_profile", "Course", "choose_device", "set_seed", "setup",
           "show_source", "__version__"]
