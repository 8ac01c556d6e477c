import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from hybridsweep import paper
from hybridsweep.reports.grid import expand
from hybridsweep.schema import ConfigError, validate
from hybridsweep.train import config_dir


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_default_config_is_valid():
    typed = validate(_compose())
    assert typed.sampling.strategy.value == "hybrid" and typed.batch_size > 0


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("batch_size=0", "batch_size", "integer > 0"),
        ("sampling.mix_ratio=1.5", "sampling.mix_ratio", "[0, 1]"),
        ("sampling.mix_ratio=often", "sampling.mix_ratio", "'auto'"),
        ("data.scale=-1", "data.scale", "fraction"),
        ("loss.temperature=0", "loss.temperature", "> 0"),
        ("+model.num_layerz=3", "model.num_layerz", "num_layers"),
        ("model.compile=yes", "model.compile='yes'", "true, false or auto"),
        ("model.compile=1", "model.compile=1", "true, false or auto"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as error:
        validate(_compose(override))
    assert key in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize("model", ["tiny", "tiny_wide", "e5_small", "e5_small_cpu", "labse", "xlmr_base"])
@pytest.mark.parametrize("setting", ["true", "false", "auto"])
def test_every_model_takes_a_compile_setting(model, setting):
    """model.compile is the pipeline's key: accepted beside the builder's arguments, auto by default."""
    assert _compose(f"model={model}").model.compile == "auto"
    assert validate(_compose(f"model={model}", f"model.compile={setting}"))


def test_unknown_strategy_fails_at_composition_with_the_choices():
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        _compose("sampling.strategy=foo")
    message = str(error.value) + str(error.value.__cause__)
    assert "sampling.strategy" in message and "hybrid" in message


def test_unknown_top_level_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        _compose("sampling.ratio=0.3")


@pytest.mark.parametrize("profile_name", ["tiny", "cpu", "gpu"])
def test_every_point_of_every_shipped_paper_profile_composes_and_validates(profile_name):
    """A profile's sweeps run only where their hardware is (gpu) or for hours (cpu): a misspelled
    key or value in one must fail here, not when the sweep reaches that point."""
    profile = paper.load_profile(profile_name)
    composed = 0
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for sweep in profile.sweeps:
            # A seed selects no config group and sets no other key: each point is composed up to
            # its seed, and each seed value once (the grids are seeds x settings).
            settings, seeds = set(), set()
            for point in expand(paper.sweep_overrides(profile, sweep)):
                setting = tuple(o for o in point if not o.startswith("seed="))
                seed = next((o for o in point if o.startswith("seed=")), None)
                if setting in settings and seed in seeds:
                    continue
                settings.add(setting)
                seeds.add(seed)
                validate(compose("train", overrides=point))
                composed += 1
    assert composed >= len(profile.sweeps)


@pytest.mark.parametrize("batch_size,steps,validate_every,lr", [(16, 256, 128, 1.2e-5), (128, 32, 16, 3.394113e-5), (256, 16, 8, 4.8e-5)])
def test_an_equal_budget_of_pairs_and_the_square_root_learning_rate_rule(batch_size, steps, validate_every, lr):
    """4,096 pairs at any batch size: trainer.max_steps = 4096 / B (hand-computed above), and
    lr = 3e-5 * sqrt(B / 100): 1.2e-5 at 16, 3e-5 * sqrt(1.28) at 128, 4.8e-5 at 256."""
    cfg = _compose(f"batch_size={batch_size}", "++trainer.max_steps='${steps_for_pairs:4096,${batch_size}}'",
                   "++trainer.val_check_interval='${steps_for_pairs:2048,${batch_size}}'",
                   "optim.optimizer.lr='${sqrt_batch_scaled:3e-5,${batch_size},100}'")
    validate(cfg)
    assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval) == (steps, validate_every)
    assert cfg.optim.optimizer.lr == pytest.approx(lr)


def test_a_budget_that_is_not_a_whole_number_of_steps_is_named():
    cfg = _compose("batch_size=48", "++trainer.max_steps='${steps_for_pairs:4096,${batch_size}}'")
    with pytest.raises(Exception, match="steps_for_pairs:4096,48.*multiple of the batch size 48"):
        validate(cfg)
