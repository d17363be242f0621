"""`model_shape`: the fields a model reads, nested models narrowed, and `None` (decode whole)
wherever the model could read something it does not declare."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import AliasPath, BaseModel, ConfigDict, Field, field_validator, model_validator

from erp_sync.core.models import Charge, Invoice, SourceModel
from erp_sync.core.shape import Shape, model_shape


def _names(shape: Shape | None) -> set[str]:
    assert shape is not None
    return set(shape.field_names())


def test_the_invoice_shape_names_its_fields_and_narrows_the_embedded_lines() -> None:
    shape = model_shape(Invoice)
    assert _names(shape) == set(Invoice.model_fields)
    lines = dict(shape.fields)["lines"]  # type: ignore[union-attr]
    assert lines is not None and not lines.is_list and _names(lines) == {"data", "has_more"}
    line_items = dict(lines.fields)["data"]
    assert line_items is not None and line_items.is_list
    assert _names(line_items) == {
        "id",
        "amount",
        "description",
        "quantity",
        "quantity_decimal",
        "discounts",
        "discount_amounts",
    }
    line_fields = dict(line_items.fields)
    # A discount may be an id or the expanded object: kept whole, reduced to its id by validation.
    assert line_fields["discounts"] is None
    assert line_fields["discount_amounts"] == Shape.of({"amount": None, "discount": None}, is_list=True)


def test_leaves_and_dicts_are_kept_whole() -> None:
    fields = dict(model_shape(Charge).fields)  # type: ignore[union-attr]
    assert fields["metadata"] is None and fields["customer"] is None and fields["amount"] is None


class _Inner(SourceModel):
    a: int


def test_a_model_that_keeps_extra_fields_is_decoded_whole() -> None:
    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        id: str

    assert model_shape(Open) is None


def test_a_model_validator_that_sees_the_raw_input_means_whole() -> None:
    class Derived(SourceModel):
        id: str

        @model_validator(mode="before")
        @classmethod
        def _from_other(cls, data: Any) -> Any:
            return data

    assert model_shape(Derived) is None


def test_an_alias_path_means_whole_and_a_plain_alias_keeps_both_names() -> None:
    class Pathed(SourceModel):
        id: str = Field(validation_alias=AliasPath("meta", "id"))

    class Aliased(SourceModel):
        key: str = Field(alias="id")

    assert model_shape(Pathed) is None
    assert _names(model_shape(Aliased)) == {"id", "key"}


def test_a_nested_model_with_a_raw_input_field_validator_is_kept_whole() -> None:
    class Outer(SourceModel):
        inner: _Inner
        items: list[_Inner]
        maybe: _Inner | None = None

        @field_validator("inner", mode="before")
        @classmethod
        def _unwrap(cls, value: Any) -> Any:
            return value

    fields = dict(model_shape(Outer).fields)  # type: ignore[union-attr]
    assert fields["inner"] is None
    assert fields["items"] == Shape.of(["a"], is_list=True)
    assert fields["maybe"] == Shape.of(["a"])


def test_merge_keeps_the_union_and_whole_wins() -> None:
    left = Shape.of({"a": None, "b": Shape.of(["x"])})
    right = Shape.of({"b": Shape.of(["y"]), "c": None})
    assert left.merge(right) == Shape.of({"a": None, "b": Shape.of(["x", "y"]), "c": None})
    assert left.merge(Shape.of({"b": None})) == Shape.of({"a": None, "b": None})
    with pytest.raises(ValueError, match="list"):
        Shape.of(["a"]).merge(Shape.of(["a"], is_list=True))
