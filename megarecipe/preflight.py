"""Every check a run gets before any process starts: the settings (megarecipe.config), then what the data dir
(megarecipe.data.facts) and the teacher (megarecipe.distill) hold. The trainer, the launcher's pool and Slurm
submission, check_config and the tools call this one function; each layer owns the checks of its own files."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from megarecipe.config import Config, ConfigError, Layout, resolve_layout
from megarecipe.config.init_from import HF_INDEX, HF_WEIGHTS, apply_hf_shape
from megarecipe.config.layout import sequences_in
from megarecipe.data.facts import mix_epoch, read_facts
from megarecipe.data.tokenizer import file_sha256
from megarecipe.distill.sources import is_cache
from megarecipe.rundir import enclosing_run


def check_run(cfg: Config, world_size: Optional[int] = None, cuda: Optional[bool] = None) -> Layout:
    """The run's layout, or ConfigError naming the first bad setting (settings first, then files). With
    model.init_from, the model's shape is set here from the Hugging Face directory's config.json."""
    if cfg.model.init_from:
        apply_hf_shape(cfg)
    resolve_layout(cfg, world_size, cuda)  # a bad setting is named before any file is opened
    inside = enclosing_run(cfg.run.dir)
    if inside:
        raise ConfigError(
            f"run.dir={cfg.run.dir!r} lies inside the run {inside}, whose files a run there would "
            f"overwrite; choose a run.dir outside every run dir"
        )
    d, k = cfg.data, cfg.distill
    meta, facts = read_facts(d)
    if d.mix:
        if k.teacher:
            if is_cache(k.teacher):
                raise ConfigError(
                    "distill.teacher is a top-k cache, which covers one data dir only; with data.mix use a live teacher"
                )
        budget = d.train_tokens if d.train_tokens is not None else facts.train_tokens
        epoch = mix_epoch(d, meta, cfg.model.seq_len, sequences_in(budget, cfg.model.seq_len))
        facts = dataclasses.replace(facts, epoch_sequences=epoch)
    layout = resolve_layout(cfg, world_size, cuda, facts)
    if cfg.model.init_from:
        _check_init_from(cfg, meta)
    if k.teacher:
        _check_teacher(cfg, meta, layout)
    return layout


def _check_init_from(cfg: Config, meta) -> None:

    where = cfg.model.init_from
    if not any(os.path.isfile(os.path.join(where, n)) for n in (HF_WEIGHTS, HF_INDEX)):
        raise ConfigError(
            f"model.init_from={where!r} has no model.safetensors (or its index); save the model with "
            f"safe_serialization (transformers' default)"
        )
    found = [os.path.join(where, n) for n in ("tokenizer.json", "tokenizer.model")]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        raise ConfigError(
            f"model.init_from={cfg.model.init_from!r} has no tokenizer.model or tokenizer.json, which "
            f"the data must be tokenized with; give a Llama directory that ships one"
        )
    if meta.tokenizer_sha256 not in {file_sha256(p) for p in found}:
        raise ConfigError(
            f"data.dir={cfg.data.dir!r} was prepared with another tokenizer than model.init_from's; "
            f"prepare it with tools/prepare_data.py --tokenizer {where}"
        )


def _check_teacher(cfg: Config, meta, layout: Layout) -> None:
    from megarecipe.distill import cache, teacher

    k, seq_len = cfg.distill, cfg.model.seq_len
    try:
        if cache.is_cache(k.teacher):
            cache.check(
                k.teacher, meta.tokenizer_sha256, seq_len, layout.num_sequences, k.temperature, meta.content_sha256()
            )
        else:
            teacher.check(k.teacher, meta.tokenizer_sha256, layout.tokenizer_vocab, seq_len)
    except teacher.TeacherError as e:
        raise ConfigError(str(e)) from None
