"""``harness run``'s handling of exceptions it did not expect (no guest needed)."""

from __future__ import annotations

import json

from harness.run import internal_error


def _raise_key_error() -> None:
    table: dict[str, int] = {}
    table["g"] += 1


def test_internal_error_is_one_line_with_type_and_place() -> None:
    try:
        _raise_key_error()
    except KeyError as e:
        text = internal_error(e)
    assert text.startswith("internal error: KeyError: 'g' (harness/tests/test_run.py:"), text
    assert text.endswith(" in _raise_key_error)"), text


def test_internal_error_names_our_deepest_frame_not_the_library() -> None:
    try:
        json.loads("{\n\n")
    except ValueError as e:
        text = internal_error(e)
    assert "\n" not in text
    assert text.startswith("internal error: JSONDecodeError: Expecting property name"), text
    assert "(harness/tests/test_run.py:" in text and text.endswith(" in " +
        "test_internal_error_names_our_deepest_frame_not_the_library)"), text


def test_internal_error_without_a_traceback() -> None:
    text = internal_error(RuntimeError("multi\n  line"))
    assert text == "internal error: RuntimeError: multi line"
    assert internal_error(KeyboardInterrupt()) == "internal error: KeyboardInterrupt"
