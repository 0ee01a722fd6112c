"""Resume on another layout (world size, data-parallel or tensor-parallel size) through DeepSpeed's universal
checkpoints.

A ZeRO checkpoint is cut by its layout: each file holds one data-parallel rank's flat partition of one
tensor-parallel shard. DeepSpeed's converter (deepspeed.checkpoint.ds_to_universal) turns it into one folder per
parameter holding the whole fp32 weight and its Adam moments, merged by what the model declares about its shards
(megarecipe/model/universal.py); an engine configured with `checkpoint.load_universal` loads that into any layout.

RUN/checkpoints/step00000120/            the original, never modified
RUN/checkpoints/step00000120.universal/  its conversion, made once by the first resume on another layout (or
                                         tools/convert_checkpoint.py --to-universal); a sibling, not a tag:
                                         pruned and set aside with its tag
RUN/checkpoints/step00000120.universal.tmp<pid>/  a conversion under way; a kill leaves it, and the next one
                                                   removes it and starts again

The converter itself decides what it can do; where it cannot (below), the resume is refused in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil

from megarecipe import atomic, rundir
from megarecipe.train.checkpoint import UNIVERSAL, CheckpointError

INFO = "universal.json"
LAYOUT = ("world_size", "tp", "pp")  # what a resume may change, given the converter can carry it over


def path(ckpt_dir: str, tag: str) -> str:
    return os.path.join(ckpt_dir, tag + UNIVERSAL)


def layout(key: dict) -> dict:
    """The layout part of a resume key, with its data-parallel size."""
    out = {k: key.get(k) for k in LAYOUT}
    if all(isinstance(v, int) and v > 0 for v in out.values()):
        out["dp"] = out["world_size"] // (out["tp"] * out["pp"])
    return out


def changes(saved: dict, key: dict) -> dict:
    """{setting: (checkpoint's, now)} of the layout settings that differ."""
    return {k: (saved.get(k), key.get(k)) for k in LAYOUT if saved.get(k) != key.get(k)}


def describe(layout_: dict) -> str:
    return ", ".join(f"{k}={layout_[k]}" for k in ("world_size", "dp", "tp", "pp") if k in layout_)


def cannot_convert(saved: dict, key: dict) -> str | None:
    """Why DeepSpeed's converter cannot carry this checkpoint to the new layout; None when it can."""
    stage = saved.get("zero_stage")
    if stage == 0:
        return (
            "its ZeRO stage 0 keeps the optimizer inside the model file, which DeepSpeed's converter "
            "(ds_to_universal) does not read"
        )
    if stage == 3:
        return "DeepSpeed's converter does not carry ZeRO-3 checkpoints of this model to another layout on this path"
    if stage not in (1, 2):
        return f"its ZeRO stage {stage!r} is not one DeepSpeed's converter reads"
    pp = (saved.get("pp"), key.get("pp"))
    if pp != (1, 1):
        return (
            f"pipeline parallelism (pp {pp[0]} -> {pp[1]}): megatron-core numbers each stage's layers from 0, "
            f"so DeepSpeed's converter would file different layers under one name"
        )
    return None


def _source_info(src: str) -> dict | None:
    import torch
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

    state = torch.load(os.path.join(src, "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False)
    return state.get(UNIVERSAL_CHECKPOINT_INFO)


def convert(ckpt_dir: str, tag: str, saved: dict) -> str:
    """The tag's universal folder, converted now unless done before. Atomic: it appears whole by a rename, or
    not at all; the original tag is only read."""
    from deepspeed.checkpoint import ds_to_universal

    out = path(ckpt_dir, tag)
    if os.path.isfile(os.path.join(out, INFO)):
        return out
    src = os.path.join(ckpt_dir, tag)
    if (saved.get("tp") or 1) > 1 and not _source_info(src):
        raise CheckpointError(
            f"cannot convert {src}: it was written before megarecipe recorded how its "
            f"tensor-parallel shards merge; resume it on its own layout ({describe(layout(saved))})"
        )
    staging = atomic.build_dir(out)  # out.tmp<pid>; those of killed conversions are removed
    # the converter writes `latest_universal` beside its output folder: keep that inside the staging folder
    target = os.path.join(staging, "converted")
    args = argparse.Namespace(
        input_folder=_readable_view(src, os.path.join(staging, "source")),
        output_folder=target,
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,
    )
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            ds_to_universal.main(args)
    except Exception as e:  # the converter reports with asserts and RuntimeErrors
        shutil.rmtree(staging, ignore_errors=True)
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(
            f"DeepSpeed's converter cannot turn {src} into a universal checkpoint ({first}); "
            f"resume it on its own layout ({describe(layout(saved))})"
        ) from None
    atomic.write_json(
        os.path.join(target, INFO),
        {"tag": tag, "step": _step(tag), "layout": layout(saved), "zero_stage": saved.get("zero_stage")},
    )
    atomic.replace_dir(target, out)
    shutil.rmtree(staging, ignore_errors=True)
    return out


def _readable_view(src: str, view: str) -> str:
    """The tag as the converter can read it: its files linked, and the model-state files without the None
    `_extra_state` entries megatron-core's linear layers save (the converter calls .float() on every module
    entry). The original is not touched."""
    import torch

    os.makedirs(view)
    for name in os.listdir(src):
        if re.fullmatch(r"mp_rank_\d+_model_states\.pt", name):
            state = torch.load(os.path.join(src, name), map_location="cpu", weights_only=False)
            state["module"] = {k: v for k, v in state["module"].items() if torch.is_tensor(v)}
            torch.save(state, os.path.join(view, name))
        elif name.endswith(".pt"):
            os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(view, name))
    return view


def _step(tag: str) -> int:
    step = rundir.tag_step(tag)
    return -1 if step is None else step


def read_info(ckpt_dir: str, tag: str) -> dict | None:
    try:
        with open(os.path.join(path(ckpt_dir, tag), INFO)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
