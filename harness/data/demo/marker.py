"""DEMO.json, the marker of a complete demo: which generator version wrote the folder, from
which (studies, seed), and whether a folder holds a demo of the current version."""
from __future__ import annotations

import json
import os
import pathlib

GENERATOR = "rsna-harness demo"
# Bumped whenever the same (studies, seed) would write different files, so is_current() reports a
# demo written by an older generator as outdated (2: per-level spinal no-coordinate rates and the
# study with its spinal points on Sagittal T1).
DEMO_VERSION = 2
MARKER = "DEMO.json"  # written last, so its presence means the dataset is complete


def _write_marker(root: pathlib.Path, studies: int, seed: int, spinal_on_t1_study: int | None) -> None:
    marker = {"generator": GENERATOR, "demo_version": DEMO_VERSION, "studies": studies, "seed": seed,
              # the study_id whose spinal coordinate rows name its Sagittal T1 series (None: no such study)
              "spinal_on_t1_study": spinal_on_t1_study}
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def is_current(root: str | os.PathLike) -> bool:
    """Whether `root` holds a complete demo written by this generator version: its marker exists and
    states DEMO_VERSION. A built-in demo for which this is False is outdated and can be regenerated."""
    try:
        marker = json.loads((pathlib.Path(root) / MARKER).read_text())
    except (OSError, ValueError):  # missing, unreadable or not JSON
        return False
    return (isinstance(marker, dict) and marker.get("generator") == GENERATOR
            and marker.get("demo_version") == DEMO_VERSION)
