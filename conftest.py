"""pytest for the whole repository: notebook kernels (nbval) and subprocesses import this checkout's lecturelib,
whichever lecturelib the environment has installed."""
import os
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                     if p and p != ROOT])
