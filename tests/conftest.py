import os

# the notebooks and tests use the quick profile unless told otherwise
os.environ.setdefault("LECTURELIB_PROFILE", "quick")

