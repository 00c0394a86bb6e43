"""The typed config loader: round trip, overrides and every kind of error."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from pipelines.config.logs import setup_logging
from pipelines.config.params import (
    ConfigError,
    add_config_args,
    apply_override,
    config_from_args,
    load_config,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def write_params(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repo_params_load_and_round_trip(tmp_path):
    cfg = load_config(PARAMS)
    assert cfg.dataset("synthetic_fashion").image_size == (128, 88)
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(dumped) == cfg
    json.dumps(to_dict(cfg))  # the resolved config is JSON-able


def test_frozen_sections():
    cfg = load_config(PARAMS)
    with pytest.raises(AttributeError):
        cfg.preprocess.shard_size = 3  # type: ignore[misc]


def test_override_changes_one_key():
    cfg = load_config(PARAMS, ["preprocess.shard_size=7", "datasets.synthetic_fashion.image_size=[64, 44]"])
    assert cfg.preprocess.shard_size == 7
    assert cfg.dataset("synthetic_fashion").image_size == (64, 44)
    assert cfg.preprocess.heatmap_sigma == load_config(PARAMS).preprocess.heatmap_sigma


def test_unknown_key_names_key_and_file(tmp_path):
    path = write_params(tmp_path, lambda r: r["preprocess"].update(shard_sise=3))
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key 'preprocess.shard_sise' \(valid there: face_size, heatmap_sigma"):
        load_config(path)


def test_unknown_section(tmp_path):
    path = write_params(tmp_path, lambda r: r.update(trian={"a": 1}))
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(path)


def test_wrong_type_names_key(tmp_path):
    path = write_params(tmp_path, lambda r: r["preprocess"].update(shard_size="many"))
    with pytest.raises(ConfigError, match=r"preprocess.shard_size: expected an integer, got str 'many'"):
        load_config(path)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="preprocess.shard_size: expected an integer"):
        load_config(PARAMS, ["preprocess.shard_size=true"])


def test_missing_required_key(tmp_path):
    path = write_params(tmp_path, lambda r: r["datasets"]["market"].pop("root"))
    with pytest.raises(ConfigError, match=r"datasets.market.root: required key is missing"):
        load_config(path)


def test_literal_choices_listed():
    with pytest.raises(ConfigError, match="datasets.market.layout: 'coco' is not one of"):
        load_config(PARAMS, ["datasets.market.layout=coco"])


def test_tuple_length_checked():
    with pytest.raises(ConfigError, match=r"image_size: expected 2 items, got 3"):
        load_config(PARAMS, ["datasets.market.image_size=[1, 2, 3]"])


def test_missing_file():
    with pytest.raises(ConfigError, match="params file not found"):
        load_config("/nonexistent/params.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_override({}, "preprocess.shard_size")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_override({}, "shard_size=3")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--params", "/nonexistent.yaml"], "params file not found"),
        (["--set", "preprocess.bogus=1"], "unknown key 'preprocess.bogus'"),
        (["--set", "preprocess.shard_size=abc"], "expected an integer"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, needle, capsys):
    setup_logging("info", "test")  # as every command does before it reads its config
    with pytest.raises(SystemExit) as exc:
        config_from_args(_parse(["--params", str(PARAMS), *argv]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_dump_config_prints_json(capsys):
    with pytest.raises(SystemExit) as exc:
        config_from_args(_parse(["--params", str(PARAMS), "--dump-config"]))
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["preprocess"]["shard_size"] == 64


def _params_with(tmp_path, edit) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_value_set_always_trains_whatever_it_is(tmp_path):
    """What `dvc exp run -S` writes into params.yaml, or --set gives, is the value that runs, even
    the built-in default (the old per-dataset recipe layer silently replaced that one)."""
    for lr in (0.0001, 0.001):  # 0.0001 is OptimConfig's own default
        path = _params_with(tmp_path, lambda raw: raw["optim"].update(lr_g=lr))
        assert load_config(path).optim.lr_g == lr
        assert load_config(PARAMS, [f"optim.lr_g={lr}"]).optim.lr_g == lr
    assert load_config(PARAMS).optim.lr_g == 0.0005  # the file's value, nothing layered on it


def test_exponent_floats_as_dvc_writes_them_are_numbers(tmp_path):
    """`dvc exp run -S optim.lr_d=0.00005` writes `lr_d: 5e-05` (YAML 1.2); it must train at 5e-05."""
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text().replace("  lr_d: 0.00005\n", "  lr_d: 5e-05\n"))
    assert "lr_d: 5e-05" in path.read_text()
    assert load_config(path).optim.lr_d == 5e-05
    assert load_config(PARAMS, ["optim.lr_g=1e-4"]).optim.lr_g == 1e-4
    assert load_config(PARAMS, ["train.run_name=1e"]).train.run_name == "1e"  # not a number: text


def test_an_unknown_key_is_refused_naming_the_key_and_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"--set 'optim.lr_gen=0.1': unknown key 'optim.lr_gen' .*params.yaml"):
        load_config(PARAMS, ["optim.lr_gen=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key 'nosuch' .*valid there: ablation, datasets"):
        load_config(PARAMS, ["nosuch.key=1"])
    path = _params_with(tmp_path, lambda raw: raw["datasets"]["synthetic_fashion"].update(overrides=["optim.lr_g=1"]))
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: unknown key 'datasets.synthetic_fashion.overrides'"):
        load_config(path)
    # In a layered read the error names the file the section came from.
    portrait = ROOT / "portrait/params.yaml"
    with pytest.raises(ConfigError, match=r"unknown key 'model.widht' \(section 'model' is read from .*portrait/params.yaml; valid there: attn_dim"):
        load_config([PARAMS, portrait], ["model.widht=3"])


def test_layered_files_replace_whole_sections():
    """portrait/params.yaml's sections replace params.yaml's whole, never key by key."""
    base = load_config(PARAMS)
    layered = load_config([PARAMS, ROOT / "portrait/params.yaml"])
    assert layered.profile == "portrait-cpu" and layered.model.pose_channels == 8
    assert layered.optim.flow_warmup_steps == 200 and layered.optim.ema_decay == 0.99  # its own, not params.yaml's
    assert layered.loss.pose_l1 == 20.0 and base.loss.pose_l1 == 0.0
    assert layered.evaluate == base.evaluate and layered.datasets == base.datasets  # sections it does not have
    assert layered.train.run_name == "portrait" and layered.train.dataset == "synthetic_portrait"


def test_same_view_pairs_are_a_share_and_need_augmentation():
    assert load_config(PARAMS, ["train.same_view_pairs=0.3"]).train.same_view_pairs == 0.3
    with pytest.raises(ConfigError, match=r"train.same_view_pairs must be in \[0, 1\], got 1.5"):
        load_config(PARAMS, ["train.same_view_pairs=1.5"])
    with pytest.raises(ConfigError, match="same_view_pairs needs train.augment"):
        load_config(PARAMS, ["train.same_view_pairs=0.3", "train.augment=false"])
