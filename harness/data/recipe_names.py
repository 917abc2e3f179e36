"""The names of the augmentation recipes (harness.data.augment.RECIPES), kept apart so that the
config can check a recipe name without importing albumentations and OpenCV."""

RECIPE_NAMES = ("none", "v4", "v4_strong", "v10_strong", "v5", "v6", "v7", "v8", "rbc0.1", "hflip", "scale0.05")
