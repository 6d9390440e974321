"""Each role's table of backends (chosen above the base modules) offers exactly the names the rig
file's schema accepts: a backend added to one and not the other fails here, not on a rig."""

from __future__ import annotations

import typing

import pytest

from rigstream.acquisition.backends import CAMERA_BACKENDS
from rigstream.config import CameraConfig, PoseConfig, TriangulationConfig, TriggerConfig
from rigstream.firmware.backends import PIN_BACKENDS
from rigstream.inference.backends import ENGINE_MAKERS, FILTER_CLASSES


def _accepted(model: type, field: str) -> set[str]:
    return set(typing.get_args(typing.get_type_hints(model)[field]))


@pytest.mark.parametrize(("table", "model", "field"), [
    (PIN_BACKENDS, TriggerConfig, "backend"),
    (CAMERA_BACKENDS, CameraConfig, "backend"),
    (ENGINE_MAKERS, PoseConfig, "engine"),
    (FILTER_CLASSES, TriangulationConfig, "filter"),
])
def test_the_table_offers_what_the_rig_file_accepts(table: dict, model: type, field: str) -> None:
    assert set(table) == _accepted(model, field)
