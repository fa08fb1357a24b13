"""The CLI plumbing commands share: settings dataclasses filled from a command's parameters, and `fail`."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from csst_edge.cli.common import fail, settings_from
from csst_edge.errors import CsstError


@dataclass
class Settings:
    threads: int | None = None
    fit: str = "resize"
    scales: tuple[float, ...] = (1.0,)
    output_video: str | None = None
    tags: list[str] = field(default_factory=list)


def test_settings_from_copies_the_parameters_named_like_fields():
    params = {"threads": 4, "fit": "letterbox", "quiet": True, "model": "m.onnx"}  # quiet, model: not fields
    assert settings_from(Settings, params) == Settings(threads=4, fit="letterbox")


def test_settings_from_explicit_values_win_over_same_named_parameters():
    params = {"threads": 4, "scales": "0.5,1.0", "overlay": "o.mp4"}
    settings = settings_from(Settings, params, scales=(0.5, 1.0), output_video=params["overlay"])
    assert settings == Settings(threads=4, scales=(0.5, 1.0), output_video="o.mp4")


def test_settings_from_keeps_the_defaults_of_fields_not_given():
    settings = settings_from(Settings, {"threads": 2})
    assert (settings.fit, settings.scales, settings.output_video, settings.tags) == ("resize", (1.0,), None, [])
    assert settings_from(Settings, {}).tags is not settings_from(Settings, {}).tags  # default_factory still runs


def test_settings_from_copies_none_rather_than_keeping_the_default():
    # a parameter that is None means None: a command that wants the default must say so explicitly
    assert settings_from(Settings, {"fit": None}).fit is None


def test_settings_from_refuses_an_explicit_name_that_is_no_field():
    with pytest.raises(TypeError):
        settings_from(Settings, {}, overlay="o.mp4")


def test_settings_from_works_on_a_command_s_locals():
    def command(threads: int = 3, quiet: bool = False) -> Settings:
        local_only = "ignored"  # noqa: F841 - a local that is no field is ignored too
        return settings_from(Settings, locals(), fit="letterbox")

    assert command() == Settings(threads=3, fit="letterbox")


def test_fail_raises_the_known_error_the_root_group_prints():
    with pytest.raises(CsstError, match="--head must be"):
        fail("--head must be logits, probs or labels")
