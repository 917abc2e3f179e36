"""`harness config VARIANT`: the resolved config, every key with its value, the layer it came from
and its one-line doc (the field docstrings of harness.core.config and alarm_config, read from their source)."""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
from typing import Any

from harness.core import alarm_config
from harness.core import config as config_module
from harness.core.config import Config
from harness.core.overrides import load_yaml
from harness.core.profiles import PROFILES
from harness.core.variant import Variant

SECTIONS = {"DataConfig": "data.", "ModelConfig": "model.", "LossConfig": "loss.", "TrainConfig": "train.",
            "AlarmConfig": "alarms.", "Config": ""}


@functools.cache
def key_docs() -> dict[str, str]:
    """Dotted key -> its field docstring (the string literal right after the field), on one line."""
    body = [node for module in (config_module, alarm_config) for node in ast.parse(inspect.getsource(module)).body]
    docs = {}
    for cls in (n for n in body if isinstance(n, ast.ClassDef) and n.name in SECTIONS):
        body = cls.body
        for field, after in zip(body, body[1:] + [None]):
            if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[SECTIONS[cls.name] + field.target.id] = " ".join(after.value.value.split())
    return docs


def sources(variant: Variant, cfg: Config, config_file: str | None, sets: dict) -> dict[str, str]:
    """Dotted key -> the layer that set its value last: default, variant, profile P, --config F, --set."""
    plain = Config().flat()
    layered = variant.defaults()
    out = {k: ("variant" if v != plain.get(k) else "default") for k, v in layered.flat().items()}
    out.update({k: "argument" for k in ("fold", "profile", "data_dir")})
    out.update({k: f"profile {cfg.profile}" for k in PROFILES[cfg.profile](layered)})
    if config_file:
        out.update({k: f"--config {config_file}" for k in load_yaml(config_file)})
    out.update({k: "--set" for k in sets})
    return out


def rows(variant: Variant, cfg: Config, config_file: str | None, sets: dict) -> list[dict[str, Any]]:
    """One row per key, in the config's own order."""
    docs, origin = key_docs(), sources(variant, cfg, config_file, sets)
    return [{"key": k, "value": v, "source": origin.get(k, "default"), "doc": docs.get(k, "")}
            for k, v in cfg.flat().items()]


def print_rows(table: list[dict[str, Any]], console) -> None:
    """Grouped by section; the doc wraps, indented under its key, so the view fits any width."""
    import textwrap

    from rich.text import Text

    section = None
    for row in table:
        head = row["key"].split(".")[0] if "." in row["key"] else "run"
        if head != section:
            section = head
            console.print(f"\n[bold]{section}[/]")
        value = row["value"]
        shown = list(value) if isinstance(value, tuple) else value
        line = Text.assemble(f"  {row['key']} = {shown!r}  ", (f"({row['source']})", "dim"))
        console.print(line, soft_wrap=True)
        if row["doc"]:
            wrapped = textwrap.fill(row["doc"], width=max(40, console.width - 1), initial_indent=" " * 6,
                                    subsequent_indent=" " * 6)
            console.print(Text(wrapped, style="dim"), soft_wrap=True)


def as_plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, dataclasses as dicts."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value
