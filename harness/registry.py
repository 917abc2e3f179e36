"""Re-exports for variant authors: `from harness.registry import register_variant` keeps working.
The registry lives in harness.core.registry (docs/architecture.md)."""
from harness.core.registry import Variant, get_variant, list_variants, register_variant

__all__ = ["Variant", "get_variant", "list_variants", "register_variant"]
