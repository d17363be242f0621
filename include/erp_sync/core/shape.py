"""Which parts of a JSON record a reader needs: a `Shape`, derived from the pydantic model.

A Stripe invoice has ~75 fields and each of its lines ~20; the invoice model reads 12 and 5. The
client decodes a page straight into dicts holding only what the model's shape names
(`clients.pages.shape_decoder`, in pydantic-core), instead of building every field as Python
objects and freeing them again: decoding once, into what the mapping reads. A shape is data, so
the same code narrows list pages, event pages (the record under `data.object`) and reconciliation's
header re-read.

`None` in a shape means "the value whole": a leaf (a string, a number, a metadata dict, an expanded
`customer` object) or anything whose shape cannot be known from the model.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic.functional_validators import BeforeValidator, PlainValidator, WrapValidator

_RAW_INPUT_VALIDATORS = (BeforeValidator, PlainValidator, WrapValidator)
_RAW_INPUT_MODES = frozenset({"before", "plain", "wrap"})


@dataclass(frozen=True)
class Shape:
    """An object's fields to keep (`None`: the field's value whole), or a list of such objects."""

    fields: tuple[tuple[str, Shape | None], ...]
    is_list: bool = False

    @classmethod
    def of(cls, fields: Mapping[str, Shape | None] | Iterable[str], *, is_list: bool = False) -> Shape:
        items = fields.items() if isinstance(fields, Mapping) else ((name, None) for name in fields)
        return cls(tuple(sorted(items, key=lambda item: item[0])), is_list)

    def as_list(self) -> Shape:
        return Shape(self.fields, is_list=True)

    def field_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.fields)

    def merge(self, other: Shape) -> Shape:
        """Everything either shape keeps; a value one of them keeps whole stays whole."""
        if self.is_list != other.is_list:
            raise ValueError("cannot merge the shape of a list with the shape of an object")
        merged: dict[str, Shape | None] = dict(self.fields)
        for name, shape in other.fields:
            if name not in merged:
                merged[name] = shape
            else:
                merged[name] = merge_optional(merged[name], shape)
        return Shape.of(merged, is_list=self.is_list)


def merge_optional(left: Shape | None, right: Shape | None) -> Shape | None:
    if left is None or right is None or left.is_list != right.is_list:
        return None
    return left.merge(right)


def model_shape(model: type[BaseModel]) -> Shape | None:
    """The fields `model` reads, nested models and lists of them narrowed in turn; None when the
    record must be decoded whole: the model keeps extra fields, or a model-level validator sees the
    raw input (it may read fields the model does not declare)."""
    if model.model_config.get("extra") == "allow" or _sees_raw_input(model):
        return None
    shapes: dict[str, Shape | None] = {}
    for name, info in model.model_fields.items():
        keys = _json_keys(name, info)
        if keys is None:
            return None
        shape = None if _field_sees_raw_input(model, name, info) else _annotation_shape(info.annotation)
        for key in keys:
            shapes[key] = merge_optional(shapes[key], shape) if key in shapes else shape
    return Shape.of(shapes)


def _json_keys(name: str, info: FieldInfo) -> list[str] | None:
    """The keys the field is read from; None for an alias path (a value nested elsewhere)."""
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    if alias is None:
        return [name]
    if isinstance(alias, str):
        return [alias, name]  # by alias, and by name where the model allows it
    if isinstance(alias, AliasChoices) and all(isinstance(choice, str) for choice in alias.choices):
        return [*(str(choice) for choice in alias.choices), name]
    return None


def _sees_raw_input(model: type[BaseModel]) -> bool:
    validators = model.__pydantic_decorators__.model_validators.values()
    return any(decorator.info.mode in _RAW_INPUT_MODES for decorator in validators)


def _field_sees_raw_input(model: type[BaseModel], name: str, info: FieldInfo) -> bool:
    if any(isinstance(item, _RAW_INPUT_VALIDATORS) for item in info.metadata):
        return True
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if name in decorator.info.fields and decorator.info.mode in _RAW_INPUT_MODES:
            return True
    return False


def _annotation_shape(annotation: Any) -> Shape | None:
    """A nested model (or an optional one, or a list of them) narrowed; anything else whole."""
    annotation = _strip_optional(_strip_annotated(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_shape(annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (Any,)
        item = _strip_optional(_strip_annotated(item))
        if isinstance(item, type) and issubclass(item, BaseModel):
            shape = model_shape(item)
            return None if shape is None else shape.as_list()
    return None


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        metadata = typing.get_args(annotation)[1:]
        if any(isinstance(item, _RAW_INPUT_VALIDATORS) for item in metadata):
            return Any
        annotation = typing.get_args(annotation)[0]
    return annotation


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _strip_annotated(members[0]) if len(members) == 1 else Any
    return annotation
