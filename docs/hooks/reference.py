"""MkDocs hook: reference pages generated from the code, so they cannot drift from it.

A page holding one of the markers below gets it replaced when the site is built:

- ``<!-- reference:config -->``: every key of ``cmdm.yaml``, from the pydantic models in
  ``cmdm_pipeline.config`` (names, types, defaults and each field's ``description=``);
- ``<!-- reference:cli -->``: the help of every ``cmdm`` command, from ``cmdm_pipeline.cli._parser()``;
- ``<!-- reference:tables -->``: every table asset of the shipped ``cmdm.yaml`` with its columns, from the
  column schemas the Dagster definitions carry (``cmdm_pipeline.tables``).
"""

from __future__ import annotations

import argparse
import enum
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

CONFIG_MARKER = "<!-- reference:config -->"
CLI_MARKER = "<!-- reference:cli -->"
TABLES_MARKER = "<!-- reference:tables -->"
# The CLI wraps its help to the terminal; a fixed width makes the page the same on every machine.
HELP_COLUMNS = "100"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CONFIG_MARKER in markdown:
        from cmdm_pipeline.config import ProjectConfig

        markdown = markdown.replace(CONFIG_MARKER, config_reference(ProjectConfig))
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if TABLES_MARKER in markdown:
        markdown = markdown.replace(TABLES_MARKER, tables_reference())
    return markdown


# --- cmdm.yaml ------------------------------------------------------------------------------------


def config_reference(root: type[BaseModel]) -> str:
    """One section per model, each right after the section that first names it (depth first)."""
    sections: dict[type[BaseModel], list[str]] = {root: ["(top level)"]}

    def visit(model: type[BaseModel]) -> None:
        for name, field in _fields(model):
            for nested in _models_in(field.annotation):
                path = _child_path(sections[model][0], name, field.annotation, nested)
                if nested in sections:
                    sections[nested].append(path)
                else:
                    sections[nested] = [path]
                    visit(nested)

    visit(root)
    return "\n".join(_section(model, paths) for model, paths in sections.items())


def _fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    return [(field.alias or name, field) for name, field in model.model_fields.items() if not field.exclude]


def _child_path(parent: str, key: str, annotation: Any, nested: type[BaseModel]) -> str:
    prefix = "" if parent == "(top level)" else parent + "."
    shape = _container_of(annotation, nested)
    return f"{prefix}{key}{shape}"


def _container_of(annotation: Any, nested: type[BaseModel]) -> str:
    """``[]`` when ``nested`` sits in a list, ``.<name>`` when it is a mapping's value."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return next((_container_of(a, nested) for a in args if nested in _models_in(a)), "")
    if origin is list:
        return "[]" + _container_of(args[0], nested)
    if origin is dict:
        return ".<name>" + _container_of(args[1], nested)
    return ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _anchor(model: type[BaseModel]) -> str:
    return "cfg-" + re.sub(r"(?<!^)(?=[A-Z])", "-", model.__name__).lower()


def _section(model: type[BaseModel], paths: list[str]) -> str:
    doc = " ".join((model.__doc__ or "").split()).replace("``", "`")
    lines = [f"### `{paths[0]}` {{#{_anchor(model)}}}", ""]
    if len(paths) > 1:
        lines += ["Also at " + ", ".join(f"`{p}`" for p in paths[1:]) + ".", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in _fields(model):
        cells = (f"`{name}`", _type(field.annotation), _default(field), field.description or "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Annotated:
        return _type(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin is Literal:
        return " or ".join(f"`{_yaml(a)}`" for a in args)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"mapping {_type(args[0])} → {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    return _YAML_TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))


_YAML_TYPES: dict[Any, str] = {
    str: "text", int: "integer", float: "number", bool: "`true` or `false`", Path: "path", Any: "any",
}


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section below)"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, float) and v.is_integer() and abs(v) >= 1000:
            return int(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    text = yaml.safe_dump(plain(value), default_flow_style=True, sort_keys=False, width=10_000, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _cell(text: str) -> str:
    # A pipe inside a cell would end it, even inside backticks.
    return text.replace("|", "\\|").replace("\n", " ")


# --- the cmdm command -----------------------------------------------------------------------------


def cli_reference() -> str:
    os.environ["COLUMNS"] = HELP_COLUMNS
    from cmdm_pipeline.cli import _parser

    return "\n".join(_command_help(_parser(), level=3))


def _command_help(parser: argparse.ArgumentParser, level: int) -> list[str]:
    out = [f"{'#' * level} `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases point at the same parser
                out += _command_help(sub, min(level + 1, 6))
    return out


# --- the warehouse tables -------------------------------------------------------------------------


def tables_reference() -> str:
    from cmdm_pipeline import tables
    from cmdm_pipeline.config import load_config
    from cmdm_pipeline.definitions import build_definitions

    shipped = load_config(Path(__file__).resolve().parents[2] / "cmdm.yaml")
    return tables.tables_reference(build_definitions(shipped).resolve_all_asset_specs())
