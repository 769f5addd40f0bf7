"""Estimator parameters as text: typed values, config files, the saved record."""

import json

import pytest

from sksimplenet import SimpleNetDetector
from sksimplenet.config import parameters_json, parameters_table, parse_value, read_config, unknown_parameters


@pytest.mark.parametrize(
    "text, value",
    [
        ("32", 32),
        ("1e-4", 1e-4),
        ("-1", -1),
        ("none", None),
        ("None", None),
        ("null", None),
        ("TRUE", True),
        ("false", False),
        ("auto", "auto"),
        ("cuda:0", "cuda:0"),
        ("features.3", "features.3"),
        ("224,224", (224, 224)),
        ("[224, 224]", (224, 224)),
        ("('layer2', 'layer3')", ("layer2", "layer3")),
        ('["layer2", "layer3"]', ("layer2", "layer3")),
        ('"123"', "123"),
        ("/data/cache dir", "/data/cache dir"),
    ],
)
def test_set_values_are_literals_when_they_parse_else_text(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_a_config_file_gives_tuples_and_refuses_what_is_not_a_table(tmp_path):
    good = tmp_path / "params.json"
    good.write_text(json.dumps({"resize": [64, 80], "sigma": 0.2}))
    assert read_config(good) == {"resize": (64, 80), "sigma": 0.2}
    toml = tmp_path / "params.toml"
    toml.write_text("resize = [64, 80]\nsigma = 0.2\n")
    assert read_config(toml) == read_config(good)
    for name, text, message in (
        ("list.json", "[1, 2]", "one table"),
        ("broken.json", "{", "not valid JSON"),
        ("params.yaml", "sigma: 1", ".json or .toml"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_config(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_config(tmp_path / "gone.json")


def test_the_saved_record_reads_back_as_the_same_parameters(tmp_path):
    detector = SimpleNetDetector(resize=(64, 80), sigma=(0.2, 0.4), layers=("layer2",), verbose=True)
    record = tmp_path / "m.params.json"
    record.write_text(parameters_json(detector))
    params = read_config(record)
    assert "verbose" not in params and unknown_parameters(params) == []
    assert SimpleNetDetector(**params).get_params() == {**detector.get_params(), "verbose": False}
    assert unknown_parameters(["sigma", "bach_size"]) == ["bach_size"]


def test_the_parameters_table_lists_every_parameter_with_its_default_and_valid_values():
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in parameters_table().splitlines()[2:]
    }
    assert set(rows) == set(SimpleNetDetector._get_param_names()) - {"verbose"}
    assert json.loads(rows["synthetic_defects"][0]) == 1.0 and "[0.0, 16.0]" in rows["synthetic_defects"][1]
