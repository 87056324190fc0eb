"""Property-based fuzzing of every input path: valid inputs, mutated, through the real commands.

Profiles (``HYPOTHESIS_PROFILE``):

* ``ci`` (the default, what ``make test`` runs): a fixed number of examples per target, derandomized,
  so the same examples run every time and a failure reproduces as it is;
* ``fuzz`` (``make fuzz``): many more examples per target from a fresh random seed; pytest prints the
  seed in its header (``hypothesis ... --hypothesis-seed=N``: pass that option to replay the run), and
  every failure prints its ``@reproduce_failure`` blob.

Every failure found becomes a regression test: an ``@example`` on the target or a plain test at the
end of the target's module. No example database is kept: a failure replays from its seed or blob.

A new input path gets a target here; the server's request bodies are the next one
(``test_fuzz_serve.py``: mutate a valid body with :func:`fuzzing.mutated`, post it, and check the
answer is a 4xx with one clear message and that the server still answers the next request).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from PIL import Image

_COMMON = dict(
    database=None,
    deadline=timedelta(seconds=10),  # a hang or a quadratic blow-up fails the example
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.register_profile("ci", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), derandomize=True,
                          **_COMMON)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")), **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """The images the fuzzed inputs name: four good ones (one EXIF-turned, one 400 x 300), a corrupt
    file, an empty file and a folder with an image's name. Read-only for the runs (checked: nothing
    writes here)."""
    root = tmp_path_factory.mktemp("fuzz-images") / "images"
    root.mkdir()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(root / "a.png")
    Image.new("RGB", (64, 48), (30, 60, 90)).save(root / "b.png")
    Image.new("RGB", (40, 30), (10, 20, 30)).save(root / "c.png")
    # Large enough that a percentage near the float maximum overflows when scaled to pixels.
    Image.new("RGB", (400, 300), (60, 60, 60)).save(root / "big.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48), (200, 10, 10)).save(root / "turned.jpg", exif=exif)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.png").write_bytes(b"")
    (root / "folder.png").mkdir()
    return root
