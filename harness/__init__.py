"""rsna-harness: one trainer, every notebook version a plugin, every run in MLflow."""

__version__ = "0.1.0"
