"""GoneAnswerSpec: what a by-id 404 must say for a stream's record to count as gone (ADR 0029)."""

from __future__ import annotations

from typing import Any

import pytest

from erp_sync.streams import STREAMS
from erp_sync.streams.spec import STRIPE_GONE_CODE, GoneAnswerSpec


def test_every_registered_stream_declares_stripe_s_answer_unless_it_says_otherwise() -> None:
    assert {name: spec.gone_answer for name, spec in STREAMS.items()} == {
        name: GoneAnswerSpec(codes=("resource_missing",), code_path=("error", "code")) for name in STREAMS
    }
    assert STRIPE_GONE_CODE == "resource_missing"


@pytest.mark.parametrize(
    ("code_path", "body", "code"),
    [
        (
            ("error", "code"),
            {"error": {"code": "resource_missing", "message": "No such invoice"}},
            "resource_missing",
        ),
        (("error", "code"), {"error": {"message": "Unrecognized request URL"}}, None),
        (("error", "code"), {"error": "not_found"}, None),
        (("error", "code"), {"error": {"code": 404}}, None),
        (("error", "code"), ["not", "an", "object"], None),
        (("error", "code"), None, None),
        (("api_error_code",), {"api_error_code": "resource_not_found", "message": "x"}, "resource_not_found"),
        (("errors", "code"), {"errors": [{"code": "not_found"}]}, None),  # a list is not walked
    ],
)
def test_code_in_reads_a_string_at_the_declared_path_only(
    code_path: tuple[str, ...], body: Any, code: str | None
) -> None:
    assert GoneAnswerSpec(code_path=code_path).code_in(body) == code


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"codes": ()}, "codes"),
        ({"codes": ("",)}, "codes"),
        ({"codes": "resource_missing"}, "codes"),  # a string, not a tuple of strings
        ({"code_path": ()}, "code_path"),
        ({"code_path": ("error", "")}, "code_path"),
    ],
)
def test_a_declaration_that_could_never_match_is_refused_naming_the_field(
    kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=f"GoneAnswerSpec.{named}:"):
        GoneAnswerSpec(**kwargs)
