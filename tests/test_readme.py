"""The README's Python snippets run as written (on CPU), in order, in one namespace, as a user
pasting them into one session would. A snippet that shows an error as ``# ValueError: ...``
after its last call must raise exactly that. CPU tensors take the reference path here, as they
do for a user (the test session's ``TRITON_INTERPRET=1`` would run the kernels interpreted)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour_snippets() -> list[str]:
    text = README.read_text()
    tour = text[text.index("## Quick tour"):text.index("### Benchmarks")]
    return re.findall(r"```python\n(.*?)```", tour, flags=re.S)


def test_quick_tour_has_snippets():
    assert len(_tour_snippets()) >= 3


def test_quick_tour_snippets_run(monkeypatch):
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")
    namespace: dict = {}
    for snippet in _tour_snippets():
        shown = re.search(r"^# (\w+Error): (.*)$", snippet, flags=re.M)
        if shown is None:
            exec(compile(snippet, str(README), "exec"), namespace)
            continue
        error = getattr(__builtins__, shown.group(1), None) if not isinstance(__builtins__, dict) \
            else __builtins__.get(shown.group(1))
        with pytest.raises(error, match=re.escape(shown.group(2))):
            exec(compile(snippet, str(README), "exec"), namespace)
