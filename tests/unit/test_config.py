import json
import shutil

import pytest
import torch

from megarecipe.config import ConfigError, load_config, resolve_layout
from megarecipe.parallel.engine import ds_config
from megarecipe.preflight import check_run


def bad(overrides, world_size=1, match=None, check_data=False):
    with pytest.raises(ConfigError, match=match) as info:
        cfg = load_config("configs/tiny.yaml", overrides)
        (check_run if check_data else resolve_layout)(cfg, world_size=world_size)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_presets_load_and_validate():
    for name, world in (("tiny", 2), ("150m", 8), ("300m", 8), ("600m", 8), ("1.4b", 8)):
        cfg = load_config(f"configs/{name}.yaml")
        assert resolve_layout(cfg, world_size=world).dp == world


def test_overrides_apply_with_types():
    cfg = load_config("configs/tiny.yaml", ["optim.weight_decay=1.6", "train.epochs=4", "data.train_tokens=null"])
    assert cfg.optim.weight_decay == 1.6 and cfg.train.epochs == 4 and cfg.data.train_tokens is None


def test_unknown_key_names_the_key_and_neighbours():
    msg = bad(["model.hiden_size=64"], match="unknown key")
    assert "model.hiden_size" in msg and "hidden_size" in msg


def test_unknown_section():
    assert "modle" in bad(["modle.hidden_size=64"], match="unknown key")


def test_wrong_type():
    assert "train.epochs" in bad(["train.epochs=many"])


def test_override_without_equals():
    bad(["optim.lr"], match="key=value")


def test_missing_yaml():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")


@pytest.mark.parametrize(
    "overrides,world,fragment",
    [
        (["model.hidden_size=130"], 1, "model.hidden_size=130 is not divisible by model.num_attention_heads"),
        (["model.num_query_groups=3"], 1, "not divisible by model.num_query_groups"),
        (["parallel.tp=8"], 8, "model.num_attention_heads=4 is not divisible by parallel.tp=8"),
        (
            ["model.num_attention_heads=8", "model.hidden_size=128", "parallel.tp=4"],
            4,
            "model.num_query_groups=2 is not divisible by parallel.tp=4",
        ),
        (["model.num_layers=3", "parallel.pp=2"], 2, "model.num_layers=3 is not divisible by parallel.pp=2"),
        (["parallel.tp=2"], 3, "world size 3 is not divisible by parallel.tp * parallel.pp = 2"),
        (["parallel.pp=2", "parallel.ds_config=zero2"], 2, "ZeRO stage 2 is not supported"),
        (["parallel.pp=2", "parallel.ds_config=zero3"], 2, "ZeRO stage 3 is not supported"),
        (["optim.lr=0"], 1, "optim.lr=0.0 must be > 0"),
        (["optim.lr=-1e-3"], 1, "optim.lr"),
        (["train.epochs=0"], 1, "train.epochs=0 must be >= 1"),
        (["train.global_batch_size=24"], 2, "train.global_batch_size=24 is not a multiple"),
        (["train.on_nonfinite=ignore"], 1, "train.on_nonfinite"),
        (["train.precision=bf16", "parallel.ds_config=zero0"], 1, "ZeRO stage 0 with bf16 is not supported"),
        (["parallel.ds_config=zero9"], 1, "parallel.ds_config='zero9' not found"),
        (["model.vocab_size=1001", "parallel.tp=2"], 2, "model.vocab_size=1001 is not divisible"),
        (["model.kernels=flash"], 1, "model.kernels='flash'; use one of auto, local, sdpa, te"),
    ]
    + ([(["model.kernels=te"], 1, "model.kernels=te needs a CUDA device")] if not torch.cuda.is_available() else []),
)
def test_bad_settings_get_one_line(overrides, world, fragment):
    assert fragment in bad(overrides, world_size=world)


def test_zero_stage_out_of_range(tmp_path):
    path = tmp_path / "zero5.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 5}}))
    assert "stage=5 is not in 0-3" in bad([f"parallel.ds_config={path}"])


def test_batch_fields_in_ds_json_are_refused(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 1}, "train_batch_size": 64}))
    assert "train_batch_size" in bad([f"parallel.ds_config={path}"])


@pytest.mark.parametrize(
    "block, field",
    [
        ({"optimizer": {"type": "Adam", "params": {"lr": 1e-4}}}, "optim.lr"),
        ({"scheduler": {"type": "WarmupLR"}}, "optim.schedule"),
        ({"fp16": {"enabled": True}}, "train.precision"),
        ({"bf16": {"enabled": True}}, "train.precision"),
        ({"gradient_clipping": 0.5}, "optim.grad_clip"),
    ],
)
def test_ds_json_blocks_the_trainer_sets_are_refused(tmp_path, block, field):
    """Each would otherwise be overwritten or ignored without a word; the message names the YAML field."""
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 1}, **block}))
    message = bad([f"parallel.ds_config={path}"])
    assert f"remove {next(iter(block))!r} from the JSON" in message and field in message


def test_pipeline_with_zero1_is_accepted():
    cfg = load_config("configs/tiny.yaml", ["parallel.pp=2", "parallel.ds_config=zero1"])
    assert resolve_layout(cfg, world_size=4).dp == 2


def test_deepspeed_batch_fields_are_derived():
    cfg = load_config("configs/tiny.yaml", ["train.global_batch_size=64", "train.micro_batch_size=8"])
    layout = resolve_layout(cfg, world_size=4)
    ds = ds_config(cfg, layout, bf16=False)
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 1
    assert ds["train_batch_size"] == 8 * 4
    assert ds["gradient_clipping"] == cfg.optim.grad_clip and ds["bf16"]["enabled"] is False


# --- settings checked against the prepared data ---------------------------------------------------


def test_data_dir_missing():
    msg = bad(["data.dir=/nonexistent/data"], check_data=True)
    assert msg.startswith("data.dir")


def test_budget_larger_than_prepared(tiny_data):
    msg = bad([f"data.dir={tiny_data}", "data.train_tokens=10000000000"], check_data=True)
    assert "data.train_tokens=10000000000 is larger than" in msg


def test_model_vocab_smaller_than_tokenizer(tiny_data):
    msg = bad([f"data.dir={tiny_data}", "model.vocab_size=100", "data.train_tokens=null"], check_data=True)
    assert "model.vocab_size=100 is smaller than the tokenizer's" in msg


def test_other_tokenizer(tiny_data, tmp_path):
    other = tmp_path / "other.model"
    shutil.copy(f"{tiny_data}/tokenizer.model", other)
    with open(other, "ab") as f:
        f.write(b"x")
    msg = bad([f"data.dir={tiny_data}", f"data.tokenizer={other}", "data.train_tokens=null"], check_data=True)
    assert "made with another tokenizer" in msg


def test_valid_with_data(tiny_data):
    cfg = load_config("configs/tiny.yaml", [f"data.dir={tiny_data}", "data.train_tokens=50000"])
    layout = check_run(cfg, world_size=2)
    assert layout.vocab_size % 128 == 0 and layout.vocab_size >= layout.tokenizer_vocab
    assert layout.total_steps == cfg.train.epochs * layout.num_sequences // cfg.train.global_batch_size
    assert layout.train_tokens <= 50000


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("model: [1, 2\n", "is not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping of sections"),
    ],
)
def test_malformed_yaml(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(str(path))


def test_a_binary_file_as_config_or_ds_config_is_one_line(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"\x80\xff" * 64)
    with pytest.raises(ConfigError, match="not a readable YAML text file"):
        load_config(str(path))
    assert "not a readable JSON text file" in bad([f"parallel.ds_config={path}"])


def test_bad_interpolation():
    with pytest.raises(ConfigError):
        load_config("configs/tiny.yaml", ["run.dir=${nope}"])


@pytest.mark.parametrize("content", [{"zero_optimization": {"stage": "auto"}}, {"zero_optimization": None}, [1, 2]])
def test_malformed_ds_json(tmp_path, content):
    path = tmp_path / "weird.json"
    path.write_text(json.dumps(content))
    assert "integer 'stage'" in bad([f"parallel.ds_config={path}"])


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["run.seed=-1"], "run.seed=-1 must be >= 0"),
        (["train.log_every=0"], "train.log_every=0 must be >= 1"),
        (["optim.lr=inf"], "optim.lr=inf must be > 0"),
        (["optim.eps=-1"], "optim.eps"),
    ],
)
def test_more_bad_settings(overrides, fragment):
    assert fragment in bad(overrides)


def test_validation_split_shorter_than_a_sequence(tiny_data):
    msg = bad(
        [f"data.dir={tiny_data}", "data.train_tokens=null", "model.seq_len=200000", "data.val_tokens=null"],
        check_data=True,
    )
    assert "validation tokens" in msg and "model.seq_len=200000" in msg


def test_an_empty_required_setting_is_named():
    with pytest.raises(ConfigError, match=r"^run.dir is empty; give it a value"):
        load_config("configs/tiny.yaml", ["run.dir="])


def test_a_path_with_an_interpolation_sign_stays_literal(tmp_path):
    """Tools pass the paths they choose through override(); saved configs read back as they were written."""
    from megarecipe.config import override, save_config
    from megarecipe.launch.spec import RunSpec

    odd = str(tmp_path / "runs ${oc.env:HOME} $x {y}")
    cfg = load_config("configs/tiny.yaml", [override("run.dir", odd), override("data.dir", odd + "/data")])
    assert cfg.run.dir == odd and cfg.data.dir == odd + "/data"
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == cfg
    args = RunSpec(config="configs/tiny.yaml", overrides=[], run_dir=odd).trainer_args()
    assert load_config(args[0], args[1:]).run.dir == odd
