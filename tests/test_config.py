import pytest

from splitnet.config import LOCAL, OFFLOAD_INPUT, Config, ConfigError, Placement
from splitnet.model import create_model


def test_every_offered_config_round_trips_through_its_string_form():
    model = create_model("mnv2_tiny")
    configs = model.split_configs() + [LOCAL, OFFLOAD_INPUT, Config.local(0.9),
                                       Config.offload_input("jpeg90")]
    configs += [c.with_exit(0.85) for c in model.split_configs()]
    for config in configs:
        assert Config.parse(str(config)) == config
        assert hash(config) == hash(Config.parse(str(config)))


def test_string_forms_are_readable():
    assert str(Config(split=3, width=4, bits=4, exit_threshold=0.9)) == "split3/w4/b4/exit0.9"
    assert str(Config(split=2, bits=8)) == "split2/raw/b8"
    assert str(LOCAL) == "local"
    assert str(OFFLOAD_INPUT) == "offload/png"
    assert Config(split=2, bits=8).raw and not Config(split=2, width=2, bits=8).raw


@pytest.mark.parametrize("text", ["split0/w4/b4", "split3/w4/b3", "split/w4/b4", "remote",
                                  "split3/w4/b4/exit1.5", "offload/gif", "local/w4"])
def test_malformed_configs_are_refused_with_config_error(text):
    with pytest.raises(ConfigError):
        Config.parse(text)


def test_configs_the_model_does_not_offer_are_refused():
    model = create_model("mnv2_tiny")
    for bad in (Config(split=4, width=4, bits=4), Config(split=1, width=3, bits=4)):
        with pytest.raises(ConfigError):
            model.check(bad)
    assert LOCAL.placement is Placement.LOCAL
