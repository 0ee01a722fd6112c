"""Every check a run gets before any process starts: the settings (megarecipe.config), then what the data dir
(megarecipe.data.facts) and the teacher (megarecipe.distill) hold. The trainer, the launcher's pool and Slurm
submission, check_config and the tools call this one function; each layer owns the checks of its own files."""
from __future__ import annotations

import dataclasses
from typing import Optional

from megarecipe.config import Config, ConfigError, Layout, resolve_layout
from megarecipe.config.layout import sequences_in
from megarecipe.data.facts import mix_epoch, read_facts
from megarecipe.rundir import enclosing_run


def check_run(cfg: Config, world_size: Optional[int] = None, cuda: Optional[bool] = None) -> Layout:
    """The run's layout, or ConfigError naming the first bad setting (settings first, then files)."""
    resolve_layout(cfg, world_size, cuda)   # a bad setting is named before any file is opened
    inside = enclosing_run(cfg.run.dir)
    if inside:
        raise ConfigError(f"run.dir={cfg.run.dir!r} lies inside the run {inside}, whose files a run there would "
                          f"overwrite; choose a run.dir outside every run dir")
    d, k = cfg.data, cfg.distill
    meta, facts = read_facts(d)
    if d.mix:
        if k.teacher:
            from megarecipe.distill.sources import is_cache

            if is_cache(k.teacher):
                raise ConfigError("distill.teacher is a top-k cache, which covers one data dir only; with data.mix "
                                  "use a live teacher")
        budget = d.train_tokens if d.train_tokens is not None else facts.train_tokens
        epoch = mix_epoch(d, meta, cfg.model.seq_len, sequences_in(budget, cfg.model.seq_len))
        facts = dataclasses.replace(facts, epoch_sequences=epoch)
    layout = resolve_layout(cfg, world_size, cuda, facts)
    if k.teacher:
        _check_teacher(cfg, meta, layout)
    return layout


def _check_teacher(cfg: Config, meta, layout: Layout) -> None:
    from megarecipe.distill import cache, teacher

    k, seq_len = cfg.distill, cfg.model.seq_len
    try:
        if cache.is_cache(k.teacher):
            cache.check(k.teacher, meta.tokenizer_sha256, seq_len, layout.num_sequences, k.temperature,
                        meta.content_sha256())
        else:
            teacher.check(k.teacher, meta.tokenizer_sha256, layout.tokenizer_vocab, seq_len)
    except teacher.TeacherError as e:
        raise ConfigError(str(e)) from None
