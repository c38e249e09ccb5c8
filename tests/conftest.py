# TRITON_INTERPRET must be set before anything imports triton: it lets our Triton
# kernel run on CPU tensors (a GPU CI can set TRITON_INTERPRET=0 to use real kernels).
import os

os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(items):
    """The notebooks' file first: it holds the longest test (the report runner on the ci preset), so
    under pytest-xdist (``scripts/test.sh``: ``-n auto --dist loadfile``) one worker starts on it at once
    while the others take the rest."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_notebooks.py")
