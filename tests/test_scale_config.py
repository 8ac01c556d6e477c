"""The new configuration keys are validated with the key named."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from hybridsweep.schema import ConfigError, register_configs, validate
from hybridsweep.train import config_dir


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_mini_batch_size_and_streaming_group():
    cfg = _compose(["data=streaming", "data.shards=/some/dir", "mini_batch_size=8"])
    typed = validate(cfg)
    assert (typed.mini_batch_size, typed.data.shards) == (8, "/some/dir")
    assert cfg.trainer.use_distributed_sampler is False
    assert validate(_compose([])).mini_batch_size is None


def test_bad_mini_batch_size_is_named():
    with pytest.raises(ConfigError, match="mini_batch_size=0 is not allowed"):
        validate(_compose(["mini_batch_size=0"]))


@pytest.mark.parametrize("overrides,message", [
    (["length_buckets=0"], "length_buckets=0 is not allowed: expected null or an integer > 0"),
    (["length_buckets=4", "mini_batch_size=8"], "length_buckets=4 is not allowed: expected null when mini_batch_size"),
])
def test_bad_length_buckets_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(_compose(overrides))
