"""Names and strings of the real Kaggle layout (docs/data.md), in one place."""

LEVELS = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
LEVEL_LABELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")  # as train_label_coordinates.csv spells them

# condition key -> (coordinate-file spelling, series description that carries it)
CONDITIONS = {
    "spinal_canal_stenosis": ("Spinal Canal Stenosis", "Sagittal T2/STIR"),
    "left_neural_foraminal_narrowing": ("Left Neural Foraminal Narrowing", "Sagittal T1"),
    "right_neural_foraminal_narrowing": ("Right Neural Foraminal Narrowing", "Sagittal T1"),
    "left_subarticular_stenosis": ("Left Subarticular Stenosis", "Axial T2"),
    "right_subarticular_stenosis": ("Right Subarticular Stenosis", "Axial T2"),
}
SERIES_DESCRIPTIONS = ("Sagittal T1", "Sagittal T2/STIR", "Axial T2")

SEVERITIES = ("Normal/Mild", "Moderate", "Severe")  # train.csv strings; label index = position
CLASS_KEYS = ("normal_mild", "moderate", "severe")  # metric and column suffixes

TRAIN_CSV = "train.csv"
COORDS_CSV = "train_label_coordinates.csv"
SERIES_CSV = "train_series_descriptions.csv"
TEST_SERIES_CSV = "test_series_descriptions.csv"
SUBMISSION_CSV = "sample_submission.csv"
TRAIN_IMAGES = "train_images"
TEST_IMAGES = "test_images"

TRAIN_COLUMNS = ("study_id",) + tuple(f"{c}_{lvl}" for c in CONDITIONS for lvl in LEVELS)
COORDS_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
SERIES_COLUMNS = ("study_id", "series_id", "series_description")
SUBMISSION_COLUMNS = ("row_id",) + CLASS_KEYS
