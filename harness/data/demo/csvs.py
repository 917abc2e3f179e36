"""The Kaggle CSVs: train labels, coordinates, train and test series descriptions and the sample
submission."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.core.competition import (
    CLASS_KEYS,
    CONDITIONS,
    COORDS_COLUMNS,
    COORDS_CSV,
    LEVELS,
    SERIES_COLUMNS,
    SERIES_CSV,
    SEVERITIES,
    SUBMISSION_COLUMNS,
    SUBMISSION_CSV,
    TEST_SERIES_CSV,
    TRAIN_COLUMNS,
    TRAIN_CSV,
)
from harness.data.demo.study import _StudyOut


def _write_csvs(root, study_ids, labels, series_rows, coord_rows, test: _StudyOut) -> None:
    severity_names = np.array(SEVERITIES + ("",), dtype=object)  # index -1 -> empty cell
    train = pd.DataFrame(severity_names[labels.reshape(len(study_ids), -1)], columns=TRAIN_COLUMNS[1:])
    train.insert(0, "study_id", study_ids)
    train.to_csv(root / TRAIN_CSV, index=False)
    pd.DataFrame(coord_rows, columns=COORDS_COLUMNS).to_csv(root / COORDS_CSV, index=False)
    pd.DataFrame(series_rows, columns=SERIES_COLUMNS).to_csv(root / SERIES_CSV, index=False)
    pd.DataFrame(test.series_rows, columns=SERIES_COLUMNS).to_csv(root / TEST_SERIES_CSV, index=False)
    test_id = test.series_rows[0][0]
    row_ids = [f"{test_id}_{c}_{lvl}" for c in CONDITIONS for lvl in LEVELS]
    submission = pd.DataFrame({"row_id": row_ids, **{k: 0.333333 for k in CLASS_KEYS}})
    submission[list(SUBMISSION_COLUMNS)].to_csv(root / SUBMISSION_CSV, index=False)
