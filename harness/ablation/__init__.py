"""`harness ablate`: which of the changes between two variants made the difference (harness.ablation.run)."""
