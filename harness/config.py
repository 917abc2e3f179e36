"""Re-exports for variant authors: `from harness.config import Config, DataConfig, ...` keeps working.
The schema lives in harness.core.config (docs/architecture.md)."""
from harness.core.config import AlarmConfig, Config, DataConfig, LossConfig, ModelConfig, TrainConfig

__all__ = ["AlarmConfig", "Config", "DataConfig", "LossConfig", "ModelConfig", "TrainConfig"]
