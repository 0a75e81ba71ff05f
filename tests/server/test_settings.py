"""ServerSettings: every field is checked when built, and the default session threads share the cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dropnet.core.errors import ConfigError
from dropnet.server.settings import ServerSettings

MODELS = Path("models")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "tpu", r"device must be one of \['auto', 'cpu', 'cuda'\], got 'tpu'"),
        ("port", -1, r"port must be an int in \[0, 65535\], got -1"),
        ("port", 65536, r"port must be an int in \[0, 65535\], got 65536"),
        ("port", True, r"port must be an int, got True"),
        ("metrics_port", 70000, r"metrics_port must be an int in \[0, 65535\] or null, got 70000"),
        ("intra_op_threads", 0, r"intra_op_threads must be an int >= 1 or null, got 0"),
        ("inference_workers", 0, r"inference_workers must be an int >= 1, got 0"),
        ("max_batch_size", 0, r"max_batch_size must be an int >= 1, got 0"),
        ("max_queue_size", -3, r"max_queue_size must be an int >= 1, got -3"),
        ("max_message_bytes", 1023, r"max_message_bytes must be an int >= 1024, got 1023"),
        ("max_mc_samples", 0, r"max_mc_samples must be an int >= 1, got 0"),
        ("max_rows_per_request", 2.0, r"max_rows_per_request must be an int, got 2\.0"),
        ("max_queue_delay_ms", -0.5, r"max_queue_delay_ms must be a finite float >= 0, got -0\.5"),
        ("reload_interval_s", float("nan"), r"reload_interval_s must be a finite float >= 0, got nan"),
        ("shutdown_grace_s", float("inf"), r"shutdown_grace_s must be a finite float >= 0, got inf"),
        ("host", None, r"host must be a string, got None"),
        ("batching", "yes", r"batching must be a bool \(true or false\), got 'yes'"),
        ("models_dir", 7, r"models_dir must be a path, got 7"),
        ("workers", 0, r"workers must be an int >= 1, got 0"),
        ("worker_threads", 2, r"unknown key\(s\) \['worker_threads'\] in the config; expected \['batching', "),
    ],
)
def test_each_field_of_a_wrong_type_or_out_of_range_is_a_config_error(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings(**{"models_dir": MODELS, field: value})


def test_every_problem_is_named_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as err:
        ServerSettings(models_dir=MODELS, port=-1, max_batch_size=0)
    assert str(err.value).splitlines() == [
        "port must be an int in [0, 65535], got -1",
        "max_batch_size must be an int >= 1, got 0",
    ]


def test_settings_are_frozen_and_take_a_str_path() -> None:
    settings = ServerSettings(models_dir="models")
    assert settings.models_dir == MODELS
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_boundary_values_are_accepted() -> None:
    settings = ServerSettings(
        models_dir=MODELS, port=65535, metrics_port=0, intra_op_threads=1, max_message_bytes=1024,
        max_queue_delay_ms=0, reload_interval_s=0.0, shutdown_grace_s=0,
    )
    assert (settings.port, settings.metrics_port, settings.max_message_bytes) == (65535, 0, 1024)


def test_session_threads_default_shares_the_cores_among_the_workers() -> None:
    cores = len(os.sched_getaffinity(0))
    assert ServerSettings(models_dir=MODELS, intra_op_threads=3, inference_workers=4).session_threads == 3
    assert ServerSettings(models_dir=MODELS, inference_workers=1).session_threads == max(1, cores // 2)
    assert ServerSettings(models_dir=MODELS, inference_workers=2).session_threads == max(1, cores // 3)
    assert ServerSettings(models_dir=MODELS, inference_workers=1, mc_workers=3).session_threads == max(1, cores // 4)
    assert ServerSettings(models_dir=MODELS, inference_workers=cores + 1).session_threads == 1
    assert ServerSettings(models_dir=MODELS, workers=2, inference_workers=1).session_threads == max(1, cores // 4)
