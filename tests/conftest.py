import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# the suite checks the physics in plain torch (no compilation per test: minutes saved);
# tests/test_kernels.py checks that the compiled kernels give the same numbers
os.environ.setdefault("NEUROSAL_COMPILE", "0")
torch.set_num_threads(2)


@pytest.fixture
def card_file(tmp_path):
    """Write a device card TOML (a dict of top-level lines + optional tables) and return its path."""
    def make(text: str, name: str = "card.toml"):
        p = tmp_path / name
        p.write_text(text)
        return p
    return make


BASE_CARD = '''
name = "test"
model = "linear"
levels = 11
g_min = 1e-6
g_max = 1e-5
'''


class _Exploit:
    """Unpickling this runs a command (creates ``marker``): what a crafted file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def exploit(tmp_path):
    """(payload, marker): a picklable object whose loading creates ``marker``."""
    marker = tmp_path / "pwned"
    return _Exploit(marker), marker
