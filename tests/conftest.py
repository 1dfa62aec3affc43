import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
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
