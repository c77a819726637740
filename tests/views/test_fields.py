"""``reports.fields.oneline``: other processes' text on a screen line, and ``core.inputs.one_line`` for recording it.
Both ask the one rule, ``core.inputs.is_control``."""

from __future__ import annotations

import pytest

from fleet_watch.core.inputs import one_line
from fleet_watch.reports.fields import oneline


@pytest.mark.parametrize("hostile", [
    "a\nb", "a\rb", "a\x1b[2Jb", "a\x9b2Jb",  # C0 and C1 escapes (\x9b is a one-byte CSI)
    "a\u202eb", "a\u200bb", "a\u2028b",  # a bidi override, a zero-width space, a line separator
    "a\udcffb",  # a byte that was not UTF-8
])
def test_control_text_never_reaches_a_line(hostile: str) -> None:
    assert oneline(hostile) == "a " + hostile[2:]  # the control character is a space; the rest is plain text
    recorded = one_line(hostile)
    assert recorded.startswith("a\\")
    assert recorded.endswith("b")
    assert recorded.isprintable()


def test_ordinary_text_is_left_alone() -> None:
    for text in ("qwen2.5-7B-Q4_K_M", "café 模型 🙂", "tab\tstays? no"):
        assert oneline(text) == text.replace("\t", " ")
