"""docs/webhook.md shows the defaults the code has."""

from __future__ import annotations

import re
from pathlib import Path

from sidecarkit import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhook.md"


def test_the_documented_webhook_options_show_the_real_defaults() -> None:
    text = DOC.read_text()
    block = text[text.index("sidecarkit webhook --tls-cert") :].split("```")[0]
    shown = dict(re.findall(r"\[(--[a-z-]+) ([^\]\s]+)\]", block))
    defaults = {
        f"--{p.name.replace('_', '-')}": str(p.default)
        for p in cli.webhook.params
        if p.name and isinstance(p.default, str | int) and not isinstance(p.default, bool)
    }
    checked = {o: v for o, v in shown.items() if o in defaults}
    assert len(checked) >= 10, checked
    for option, value in checked.items():
        assert defaults[option] == value, (option, value, defaults[option])
