"""Deterministic synthetic RSNA 2024 lumbar spine dataset, written in the exact Kaggle layout.

The demo stands in for the real competition data (docs/data.md) wherever that is not
reachable. Its heart is a learnable spinal canal signal on Sagittal T2/STIR: a bright CSF band
that narrows at each disc level in proportion to that level's spinal canal stenosis label.
Neural foramina (Sagittal T1) and lateral recesses (Axial T2) shrink with their labels too.

All anatomy is laid out once per study in patient millimetres (DICOM LPS, midline at x = 0);
every series samples it through its own pixel grid, so the DICOM geometry, the drawn anatomy
and the coordinate file agree with each other by construction.

It also carries the real files' quirks a reader has to survive: empty labels, labelled levels
without a coordinate row (spinal ones at the real rate, mostly at the top two levels), unsorted
coordinate rows, reversed instance numbers, second axial stacks, and one study whose spinal
coordinate rows name its Sagittal T1 series (DEMO.json's "spinal_on_t1_study").

The package, in the order a study is made (each part imports only the parts listed above it):

- seeds.py: one (seed, studies) pair spawned into independent random streams; distinct ids.
- labels.py: condition indices, severity and missing-coordinate rates, the label draw.
- anatomy.py: one study's spine in patient mm, planned from its labels.
- geometry.py: each series' pixel grid and slice positions; patient mm to pixels.
- drawing.py: the slices painted from the anatomy, stored as uint16 with bias and noise.
- marker.py: DEMO.json (generator version, studies, seed) and is_current().
- dicom_writer.py: deterministic UIDs and one DICOM file per slice.
- study.py: one study planned, drawn and written, and its coordinate rows.
- parallel.py: the train studies in order, serially or by spawned processes.
- csvs.py: the Kaggle CSVs.
- dataset.py: generate_demo(), the whole folder written to a temporary sibling and renamed.
"""
from __future__ import annotations

from harness.data.demo.dataset import DEFAULT_SEED, DEFAULT_STUDIES, generate_demo

# not public: tests/test_demo.py checks the label draw through these
from harness.data.demo.labels import SPINAL, _labels_for  # noqa: F401
from harness.data.demo.marker import DEMO_VERSION, MARKER, is_current

__all__ = ["DEFAULT_SEED", "DEFAULT_STUDIES", "DEMO_VERSION", "MARKER", "generate_demo", "is_current"]
