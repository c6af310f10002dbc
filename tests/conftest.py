"""Shared fixtures: small generated datasets, and the real data folder when it is present."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

def one_line_error(capsys, argv, *needles):
    """Run the CLI; assert exit code 2 and exactly one stderr line containing every needle."""
    from discodance.cli import main
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# A small, fast model for tests: the protocol is what is under test, not capacity.
TINY_MODEL = {"channels": (8, 16), "hidden": 32, "latents": 4, "classes": 5}


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory):
    """Caches (the evaluation network's) go to a folder of the test session, not the user's home."""
    import os
    os.environ["DISCODANCE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of small-tensor tests."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """300 frames of the built-in dancer at 32x32 (two clips)."""
    import numpy as np
    from discodance.data.writer import write_dataset
    from discodance.data.synthetic import make_dancer
    frames, poses, _ = make_dancer(300, 32, 32, seed=3)
    out = tmp_path_factory.mktemp("data") / "tiny"
    return write_dataset(out, frames, poses=poses.astype(np.float32), fps=24, source="test",
                         clips=[{"name": "a", "start": 0, "length": 150}, {"name": "b", "start": 150, "length": 150}])


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA
