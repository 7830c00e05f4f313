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
    from pathlib import Path

    path = Path(inspect.getsourcefile(obj)).resolve()
    package_root = Path(__file__).resolve().parent.parent
    # print the path inside the course (lecturelib/...), never this machine's folders
    shown = path.relative_to(package_root) if path.is_relative_to(package_root) else path.name
    print(f"# {shown}")
    print(src)


def show_signature(obj) -> None:
    """Print where a lecturelib function or class lives, its signature and the first paragraph of its docstring,
    but not its code: what an exercise may show of the course's own implementation without giving it away."""
    import inspect
    from pathlib import Path

    if not callable(obj):
        raise ValueError(f"show_signature: {obj!r} is not a function or class; pass one")
    try:
        path = Path(inspect.getsourcefile(obj)).resolve()
        package_root = Path(__file__).resolve().parent.parent
        shown = path.relative_to(package_root) if path.is_relative_to(package_root) else path.name
    except (TypeError, OSError):
        shown = getattr(obj, "__module__", "?")
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = "(...)"
    kind = "class" if inspect.isclass(obj) else "def"
    doc = (inspect.getdoc(obj) or "").split("\n\n")[0].strip()
    print(f"# {shown}")
    print(f"{kind} {obj.__name__}{signature}:")
    if doc:
        print('    """' + doc.replace("\n", "\n    ") + '"""')
    print("    ...")


__all__ = ["PROFILES", "Profile", "get_profile", "Course", "choose_device", "set_seed", "setup",
           "show_source", "show_signature", "__version__"]
