"""Hugging Face export: a `LlamaForCausalLM` directory made from a megarecipe export (RUN/export).

OUT/config.json, OUT/model.safetensors    Llama weights under transformers' names, fp32
OUT/tokenizer.json, tokenizer_config.json  a fast tokenizer giving the run's ids: made from its sentencepiece
                                           model, or the run's own tokenizer.json
OUT/megarecipe.json                        where it came from (export dir, tokenizer hash)

The reference Llama already rotates halves as transformers does, so q/k rows need no permutation; the fused
QKV rows are split per kv group and the fused MLP input into gate and up.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile

import torch

from megarecipe.atomic import build_dir, file_mode, replace_dir
from megarecipe.config import ModelConfig
from megarecipe.config.init_from import HF_CONFIG, HF_INDEX, HF_WEIGHTS
from megarecipe.data.tokenizer import DataError, find_tokenizer, load_tokenizer
from megarecipe.errors import UserError
from megarecipe.model.export import load_export, save_safetensors

# Stands in for "\n" while the sentencepiece character map runs (it would turn the newline into a space);
# a private-use code point, so text that contains it tokenizes differently from sentencepiece.
_NEWLINE_STANDIN = "\ue000"


def hf_state_dict(state: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """Canonical megarecipe (megatron TP=1, PP=1) names -> transformers Llama names."""
    heads, groups = m.num_attention_heads, m.num_query_groups
    head_dim, per_group = m.hidden_size // heads, heads // groups
    out = {
        "model.embed_tokens.weight": state["embedding.word_embeddings.weight"],
        "model.norm.weight": state["decoder.final_layernorm.weight"],
        "lm_head.weight": state["output_layer.weight"],
    }
    for i in range(m.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        qkv = state[src + "self_attention.linear_qkv.weight"].view(groups, per_group + 2, head_dim, m.hidden_size)
        gate, up = state[src + "mlp.linear_fc1.weight"].chunk(2, dim=0)
        out.update(
            {
                dst + "input_layernorm.weight": state[src + "input_layernorm.weight"],
                dst + "post_attention_layernorm.weight": state[src + "pre_mlp_layernorm.weight"],
                dst + "self_attn.q_proj.weight": qkv[:, :per_group].reshape(-1, m.hidden_size),
                dst + "self_attn.k_proj.weight": qkv[:, per_group].reshape(-1, m.hidden_size),
                dst + "self_attn.v_proj.weight": qkv[:, per_group + 1].reshape(-1, m.hidden_size),
                dst + "self_attn.o_proj.weight": state[src + "self_attention.linear_proj.weight"],
                dst + "mlp.gate_proj.weight": gate,
                dst + "mlp.up_proj.weight": up,
                dst + "mlp.down_proj.weight": state[src + "mlp.linear_fc2.weight"],
            }
        )
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers Llama names -> canonical megarecipe ones; the inverse of hf_state_dict. A model with tied
    embeddings (no lm_head.weight) gets the embedding as its output layer too."""
    heads, groups = m.num_attention_heads, m.num_query_groups
    head_dim, per_group = m.hidden_size // heads, heads // groups
    embedding = hf["model.embed_tokens.weight"]
    out = {
        "embedding.word_embeddings.weight": embedding,
        "decoder.final_layernorm.weight": hf["model.norm.weight"],
        "output_layer.weight": hf.get("lm_head.weight", embedding),
    }
    for i in range(m.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        q = hf[src + "self_attn.q_proj.weight"].view(groups, per_group, head_dim, m.hidden_size)
        k = hf[src + "self_attn.k_proj.weight"].view(groups, 1, head_dim, m.hidden_size)
        v = hf[src + "self_attn.v_proj.weight"].view(groups, 1, head_dim, m.hidden_size)
        out.update(
            {
                dst + "input_layernorm.weight": hf[src + "input_layernorm.weight"],
                dst + "pre_mlp_layernorm.weight": hf[src + "post_attention_layernorm.weight"],
                dst + "self_attention.linear_qkv.weight": torch.cat([q, k, v], dim=1).reshape(-1, m.hidden_size),
                dst + "self_attention.linear_proj.weight": hf[src + "self_attn.o_proj.weight"],
                dst + "mlp.linear_fc1.weight": torch.cat(
                    [hf[src + "mlp.gate_proj.weight"], hf[src + "mlp.up_proj.weight"]], dim=0
                ),
                dst + "mlp.linear_fc2.weight": hf[src + "mlp.down_proj.weight"],
            }
        )
    return {k: v.float().contiguous() for k, v in out.items()}


def read_hf_weights(path: str) -> dict[str, torch.Tensor]:
    """A Hugging Face directory's safetensors weights, one file or sharded (model.safetensors.index.json)."""
    from safetensors.torch import load_file

    index = os.path.join(path, HF_INDEX)
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(path, HF_WEIGHTS)):
        files = [HF_WEIGHTS]
    else:
        raise UserError(
            f"model.init_from={path!r}: no model.safetensors (or its index); save the model with "
            f"safe_serialization (transformers' default)"
        )
    state = {}
    for name in files:
        state.update(load_file(os.path.join(path, name)))
    return state


def hf_config(m: ModelConfig, vocab_size: int, bos_id: int | None, eos_id: int | None) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": "float32",
        "vocab_size": vocab_size,
        "hidden_size": m.hidden_size,
        "intermediate_size": m.ffn_hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_query_groups,
        "head_dim": m.hidden_size // m.num_attention_heads,
        "hidden_act": "silu",
        "rms_norm_eps": m.norm_eps,
        "max_position_embeddings": m.seq_len,
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
        "rope_theta": m.rope_theta,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": m.init_std,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
    }


def fast_tokenizer(sp_model_path: str):
    """A transformers fast tokenizer giving the sentencepiece model's ids on any text (but the stand-in).

    transformers' Llama conversion keeps the BPE pieces and merges; what it drops is the model's normaliser:
    the NFKC character map, and the removal of leading, trailing and repeated spaces. Those are put back here,
    and "\n" (a user-defined piece the map must not touch) stops being an added token so the whole text is
    normalised at once, as sentencepiece does."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Tokenizer
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast

    proto = sentencepiece_model_pb2.ModelProto()
    with open(sp_model_path, "rb") as f:
        proto.ParseFromString(f.read())
    spec = proto.normalizer_spec
    with tempfile.TemporaryDirectory() as tmp:  # transformers reads the model from a directory
        shutil.copy(sp_model_path, os.path.join(tmp, "tokenizer.model"))
        llama = LlamaTokenizer.from_pretrained(tmp, add_bos_token=False, add_eos_token=False)
    backend = json.loads(llama.backend_tokenizer.to_str())
    backend["added_tokens"] = [t for t in backend["added_tokens"] if t["special"]]
    steps = []
    if spec.precompiled_charsmap:
        steps += [
            {"type": "Replace", "pattern": {"String": "\n"}, "content": _NEWLINE_STANDIN},
            {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(spec.precompiled_charsmap).decode()},
            {"type": "Replace", "pattern": {"String": _NEWLINE_STANDIN}, "content": "\n"},
        ]
    if spec.remove_extra_whitespaces:  # the regex engine is Oniguruma: ^ and $ would match at every newline
        steps += [
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            {"type": "Replace", "pattern": {"Regex": "\\A | \\z"}, "content": ""},
        ]
    backend["normalizer"] = {"type": "Sequence", "normalizers": steps}
    # "first" prepends only where the normalised text still starts at offset 0, which stripping breaks
    backend["pre_tokenizer"]["prepend_scheme"] = "always" if spec.add_dummy_prefix else "never"
    special = {
        name: proto.pieces[i].piece
        for name, i in (
            ("unk_token", proto.trainer_spec.unk_id),
            ("bos_token", proto.trainer_spec.bos_id),
            ("eos_token", proto.trainer_spec.eos_id),
        )
        if i >= 0
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(backend)), **special, add_bos_token=False, add_eos_token=False
    )


def run_tokenizer(export_dir: str):
    """The transformers fast tokenizer of an export: of its tokenizer.json (EOS/BOS from its config), else made
    from its sentencepiece model."""
    from transformers import PreTrainedTokenizerFast

    path = find_tokenizer(export_dir)
    if path is None:
        raise UserError(
            f"{export_dir}: no tokenizer.model or tokenizer.json; re-export the run from a data dir "
            f"that has its tokenizer"
        )
    if not path.endswith(".json"):
        return fast_tokenizer(path)
    try:
        ours = load_tokenizer(export_dir)
    except DataError as e:
        raise UserError(str(e)) from None
    from tokenizers import Tokenizer

    backend = json.loads(Tokenizer.from_file(path).to_str())
    backend["post_processor"] = None  # training added no BOS: tok(text) gives the ids the run was trained on
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(backend)),
        eos_token=ours.eos_token,
        bos_token=ours.bos_token,
        add_bos_token=False,
        add_eos_token=False,
    )


def export_hf(export_dir: str, out_dir: str, origin: dict | None = None) -> str:
    """Write OUT from a megarecipe export; into OUT.tmp first, then moved into place. `origin` is what
    megarecipe.json names as the source (default: the export dir)."""
    from transformers import GenerationConfig

    out_dir = os.path.realpath(out_dir)  # one path for the check and the write
    ours = os.path.isfile(os.path.join(out_dir, "megarecipe.json"))
    if os.path.exists(out_dir) and not ours and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(
            f"--out {out_dir}: exists and is no Hugging Face export of ours (no megarecipe.json); it "
            f"would be replaced, so give a new directory (or an older export to rewrite)"
        )
    model, cfg, info = load_export(export_dir)
    tokenizer = run_tokenizer(export_dir)
    tmp = build_dir(out_dir)
    try:
        weights = os.path.join(tmp, HF_WEIGHTS)
        save_safetensors(hf_state_dict(model.state_dict(), cfg.model), weights, metadata={"format": "pt"})
        os.chmod(weights, file_mode())  # safetensors writes through a private temporary file (mode 0600)
        config = hf_config(cfg.model, info["vocab_size"], tokenizer.bos_token_id, tokenizer.eos_token_id)
        with open(os.path.join(tmp, HF_CONFIG), "w") as f:
            json.dump(config, f, indent=1)
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, max_length=cfg.model.seq_len
        ).save_pretrained(tmp)
        tokenizer.model_max_length = cfg.model.seq_len
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "megarecipe.json"), "w") as f:
            json.dump(
                {
                    **(origin or {"export": os.path.abspath(export_dir)}),
                    "tokenizer_sha256": info["tokenizer_sha256"],
                    "params": info["params"],
                },
                f,
                indent=1,
            )
    except BaseException:  # a full disk: the half-written build would keep it full
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out_dir)
    return out_dir
