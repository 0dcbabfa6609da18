"""The ``stages:`` list of the logs agent's config: read in order, refused with a clear error."""

from __future__ import annotations

import pytest

from sidecarkit.agents.logs import redaction, settings, stages


def test_stages_are_read_in_order_with_names_from_their_type() -> None:
    config = settings.from_mapping(
        {
            "stages": [
                {"type": "multiline", "preset": "java"},
                {"type": "parse", "format": "logfmt"},
                {"type": "grep", "field": "level", "drop": "^debug$"},
                {"type": "grep", "keep": ["GET", "POST"], "name": "methods"},
                {"type": "modify", "add": {"env": "prod"}, "copy": {"k8s_pod": "pod"}},
                {"type": "redact", "patterns": ["email", {"regex": "id=\\d+"}]},
                {"type": "throttle", "key": "level", "rate": 100, "per": "500ms"},
            ]
        },
        source="logs.yaml",
    )
    assert [s.name for s in config.stages] == [
        "multiline",
        "parse",
        "grep-1",
        "methods",
        "modify",
        "redact",
        "throttle",
    ]
    assert config.stages[2] == stages.Grep("grep-1", "level", (), ("^debug$",))
    assert config.stages[6] == stages.Throttle("throttle", 100, 0.5, "level")
    assert config.stages[5] == stages.Redact(
        "redact", ("message",), (redaction.Pattern("email"), redaction.Pattern(regex="id=\\d+"))
    )


def test_a_leading_multiline_stage_joins_lines_in_every_source_parser() -> None:
    config = settings.from_mapping(
        {
            "sources": [
                {"paths": "/a/*.log"},
                {"name": "b", "paths": "/b/*.log", "parser": "json"},
            ],
            "stages": [{"type": "multiline", "preset": "python", "max_lines": 50}],
        },
        source="logs.yaml",
    )
    parsers = [s.parser for s in settings.effective_sources(config)]
    assert [(p.format, p.multiline, p.max_lines) for p in parsers] == [
        ("raw", "python", 50),
        ("json", "python", 50),
    ]


def test_a_multiline_stage_and_a_multiline_parser_on_one_source_are_refused() -> None:
    config = settings.from_mapping(
        {
            "parser": {"format": "raw", "multiline": "java"},
            "stages": [{"type": "multiline", "preset": "java"}],
        },
        source="logs.yaml",
    )
    with pytest.raises(ValueError, match="already has a multiline parser; keep one"):
        settings.effective_sources(config)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"type": "filter"}, "stages[0].type: 'filter' is not a stage; use one of grep, modify"),
        ({"grep": "x"}, "stages[0].type: None is not a stage"),
        ({"type": "grep", "drop": "(oops"}, "stages[0].drop[0]: '(oops' is not a valid regular"),
        ({"type": "grep"}, "a grep stage needs keep or drop"),
        ({"type": "grep", "keep": "a", "regex": "b"}, "unknown key 'regex' for a grep stage"),
        ({"type": "modify"}, "a modify stage needs at least one of rename, remove"),
        ({"type": "modify", "add": {"a": [1]}}, "stages[0].add.a: expected a string, number"),
        ({"type": "modify", "rename": ["a"]}, "stages[0].rename: expected a mapping such as"),
        ({"type": "redact", "patterns": ["mail"]}, "'mail' is not a built-in pattern; use one of"),
        ({"type": "redact"}, "a redact stage needs patterns"),
        (
            {"type": "redact", "patterns": [{"regex": "a", "replacement": "\\g<x>"}]},
            "stages[0].patterns[0].replacement: '\\\\g<x>' is not a valid replacement",
        ),
        ({"type": "redact", "patterns": [{"regex": "x*"}]}, "matches the empty string"),
        ({"type": "parse", "format": "xml"}, "stages[0].format: 'xml' is not a format"),
        ({"type": "parse", "format": "regex", "regex": "\\w+"}, "has no named group"),
        ({"type": "parse", "format": "json", "regex": "a"}, "only used with format: regex"),
        ({"type": "throttle"}, "a throttle stage needs rate"),
        ({"type": "throttle", "rate": 0}, "stages[0].rate: expected a whole number of at least 1"),
        ({"type": "throttle", "rate": 5, "per": "soon"}, "stages[0].per"),
        ({"type": "sample"}, "a sample stage needs rate: keep one record in rate"),
        ({"type": "sample", "rate": "half"}, "stages[0].rate: expected a whole number"),
        ({"type": "sample", "rate": 10, "per": "1s"}, "unknown key 'per' for a sample stage"),
        ({"type": "multiline", "preset": "cobol"}, "multiline 'cobol' is not a preset"),
        ({"type": "multiline"}, "a multiline stage needs preset"),
    ],
)
def test_a_bad_stage_is_refused_naming_the_key_the_value_and_the_fix(
    stage: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^logs\.yaml: stages\[0\]") as caught:
        settings.from_mapping({"stages": [stage]}, source="logs.yaml")
    assert message in str(caught.value)


def test_multiline_anywhere_but_first_is_refused() -> None:
    with pytest.raises(ValueError, match=r"stages\[1\]: multiline .* move it to the top"):
        stages.from_config(
            [{"type": "grep", "keep": "x"}, {"type": "multiline", "preset": "go"}], "stages"
        )


def test_two_stages_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match=r"stages\[1\]\.name: 'x' names two stages"):
        stages.from_config(
            [
                {"type": "grep", "keep": "a", "name": "x"},
                {"type": "redact", "name": "x", "patterns": "email"},
            ],
            "stages",
        )


def test_stages_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="stages is a list of mappings"):
        settings.from_mapping({"stages": {"type": "grep"}}, source="logs.yaml")
