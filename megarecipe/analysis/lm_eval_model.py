"""lm-eval model type "megarecipe": a run's export, or an ensemble of runs (the mean of their logits).

    MegarecipeLM("runs/300m-best")      a run dir (its export/), or an export dir itself
    MegarecipeLM("ens/300m")            a dir whose ensemble.json lists the member run dirs

Log-likelihoods follow lm-eval's `hf` model: context and continuation are encoded together with the run's
sentencepiece model and the continuation is what follows the context's tokens; no BOS; sequences longer than
the model's are cut from the left. Runs in bf16 on a GPU and fp32 on the CPU; at most `max_resident`
ensemble members are in memory at once (more are streamed in groups, re-read once per chunk of requests).
"""

from __future__ import annotations

import json
import os
import sys

import lm_eval.models  # noqa: F401  (registers the built-in models first; registering ours alone would hide them)
import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from megarecipe import ensembledir, errors, rundir
from megarecipe.data.tokenizer import find_tokenizer, load_tokenizer
from megarecipe.model.export import load_export, read_config, read_info
from megarecipe.rundir import RunDir

MODEL_TYPE = "megarecipe"


def _terminal() -> bool:
    """Progress bars only on a terminal: in a log file each redraw would be another line."""
    return sys.stderr.isatty()


class ModelSourceError(errors.UserError):
    """A path that holds no usable export or ensemble; one line with the fix."""


def member_exports(path: str) -> list[str]:
    """The export dirs behind PATH: an export dir, a run dir with export/, or an ensemble dir."""
    if os.path.isfile(ensembledir.listing(path)):
        try:
            with open(ensembledir.listing(path)) as f:
                members = json.load(f).get("members") or []
        except (OSError, ValueError, AttributeError) as e:
            raise ModelSourceError(
                f"{path}/ensemble.json is unreadable ({e}); re-run `tools/ensemble.py eval {path}`"
            ) from None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members) or not members:
            raise ModelSourceError(f'{path}/ensemble.json lists no members; write the member run dirs under "members"')
        exports = []
        for run in members:
            run = run if os.path.isabs(run) else os.path.join(path, run)
            if not os.path.isfile(os.path.join(RunDir(run).export, rundir.MODEL_JSON)):
                raise ModelSourceError(
                    f"ensemble member {run} has no export (export/model.json); finish or re-export that run"
                )
            exports.append(RunDir(run).export)
        return exports
    if os.path.isfile(os.path.join(path, rundir.MODEL_JSON)):
        return [path]
    if os.path.isfile(os.path.join(RunDir(path).export, rundir.MODEL_JSON)):
        return [RunDir(path).export]
    if not os.path.isdir(path):
        raise ModelSourceError(f"{path}: no such directory; give a run dir, an export dir or an ensemble dir")
    raise ModelSourceError(
        f"{path}: no export (export/model.json) and no ensemble.json; a finished training run writes RUN/export"
    )


def check_members(exports: list[str]) -> dict:
    """The members' shared facts (tokenizer hash, vocab size, seq_len); refuses members that differ."""
    facts = []
    for export in exports:
        try:
            info, seq_len = read_info(export), read_config(export).model.seq_len
        except ValueError as e:
            raise ModelSourceError(str(e)) from None
        if find_tokenizer(export) is None:
            raise ModelSourceError(
                f"{export}: tokenizer.model (or .json) is missing; re-export the run from its data dir"
            )
        facts.append(
            {"tokenizer_sha256": info.get("tokenizer_sha256"), "vocab_size": info["vocab_size"], "seq_len": seq_len}
        )
    for export, fact in zip(exports[1:], facts[1:], strict=True):
        for key, what in (("tokenizer_sha256", "tokenizer"), ("vocab_size", "vocab size"), ("seq_len", "seq_len")):
            if fact[key] != facts[0][key]:
                raise ModelSourceError(
                    f"ensemble member {export} has another {what} than {exports[0]} "
                    f"({fact[key]} vs {facts[0][key]}); ensemble runs trained with the same "
                    f"tokenizer and shape"
                )
    return facts[0]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@register_model(MODEL_TYPE)
class MegarecipeLM(TemplateLM):
    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 16,
        device: str | None = None,
        dtype: str | None = None,
        max_resident: int | str = 4,
        logits_budget_mb: int | str = 1024,
        **_ignored,
    ):
        super().__init__()

        self.exports = member_exports(pretrained)
        facts = check_members(self.exports)
        self.sp = load_tokenizer(self.exports[0])
        self.vocab_size, self.seq_len = facts["vocab_size"], facts["seq_len"]
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto" -> a fixed size
        self._device = torch.device(device or default_device())
        self.dtype = (
            getattr(torch, dtype) if dtype else (torch.bfloat16 if self._device.type == "cuda" else torch.float32)
        )
        self.max_resident = max(1, int(max_resident))
        self.logits_budget = int(logits_budget_mb) << 20
        self._resident = self._load(self.exports) if len(self.exports) <= self.max_resident else None

    def _load(self, exports: list[str]) -> list[torch.nn.Module]:

        try:
            return [load_export(e)[0].to(self._device, self.dtype) for e in exports]
        except ValueError as e:  # damaged weights: one line, not lm-eval's traceback
            raise ModelSourceError(str(e)) from None

    def _member_groups(self):
        if self._resident is not None:
            yield self._resident
            return
        for i in range(0, len(self.exports), self.max_resident):
            models = self._load(self.exports[i : i + self.max_resident])
            yield models
            del models

    # lm-eval's tokenizer interface
    @property
    def eot_token_id(self) -> int:
        return self.sp.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.sp.bos_id if self.sp.bos_id >= 0 else self.sp.eos_id  # as the hf model picks it

    @property
    def max_length(self) -> int:
        return self.seq_len

    @property
    def device(self):
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_kwargs) -> list[int]:
        return self.sp.encode(string)

    def tok_decode(self, tokens, **_kwargs) -> str:
        return self.sp.decode(list(tokens))

    # scoring
    def _pack(self, pairs: list[tuple[list[int], list[int]]]):
        """Right-padded inputs [b, s], and for each row the positions whose logits predict its continuation."""
        inputs, positions = [], []
        for context, continuation in pairs:
            whole = (context + continuation)[-(self.max_length + 1) :]
            inputs.append(whole[:-1])
            start = len(whole) - 1 - len(continuation)
            positions.append(list(range(start, len(whole) - 1)))
        width, cont = max(map(len, inputs)), max(map(len, positions))
        tokens = torch.zeros(len(inputs), width, dtype=torch.long)
        index = torch.zeros(len(inputs), cont, dtype=torch.long)
        for i, (row, pos) in enumerate(zip(inputs, positions, strict=True)):
            tokens[i, : len(row)] = torch.tensor(row)
            index[i, : len(pos)] = torch.tensor(pos)
        return tokens.to(self._device), index.to(self._device)

    @torch.no_grad()
    def _continuation_logits(self, models, tokens, index) -> torch.Tensor:
        """Sum over models of the fp32 logits at the continuation positions: [b, cont, vocab]."""
        rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]

        def pick(_module, _inputs, hidden):
            # the final norm works per position: keeping only these rows leaves their logits as they were, and
            # the output layer (most of a small model's work) then runs on the continuation positions alone
            return hidden[rows, index]

        total = None
        for model in models:
            handle = model.decoder.final_layernorm.register_forward_hook(pick)
            try:
                logits = model(tokens).float()
            finally:
                handle.remove()
            total = logits if total is None else total + logits
        return total

    def _chunks(self, batches: list[list[int]], cont_lens: list[int]):
        """Groups of batches whose stored logits fit the budget (one batch when every member is resident)."""
        if self._resident is not None:
            yield from ([b] for b in batches)
            return
        chunk, size = [], 0
        for batch in batches:
            need = len(batch) * max(cont_lens[i] for i in batch) * self.vocab_size * 4
            if chunk and size + need > self.logits_budget:
                yield chunk
                chunk, size = [], 0
            chunk.append(batch)
            size += need
        if chunk:
            yield chunk

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not _terminal())

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **_kwargs) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        cont_lens = [len(c) for _, c in pairs]
        if max(cont_lens, default=0) > self.max_length:
            raise ValueError(
                f"a continuation of {max(cont_lens)} tokens is longer than the model's "
                f"{self.max_length}; shorten the task's answers"
            )
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        bar = tqdm(total=len(pairs), disable=disable_tqdm or not _terminal(), desc="megarecipe loglikelihood")
        for chunk in self._chunks(batches, cont_lens):
            packed = [self._pack([pairs[i] for i in batch]) for batch in chunk]
            sums = [None] * len(chunk)
            for models in self._member_groups():
                for j, (tokens, index) in enumerate(packed):
                    part = self._continuation_logits(models, tokens, index)
                    sums[j] = part if sums[j] is None else sums[j] + part
            for batch, total in zip(chunk, sums, strict=True):
                logprobs = F.log_softmax(total / len(self.exports), dim=-1)
                for row, i in enumerate(batch):
                    target = torch.tensor(pairs[i][1][-cont_lens[i] :], device=logprobs.device)
                    lp = logprobs[row, : cont_lens[i]]
                    results[i] = (float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
                bar.update(len(batch))
        bar.close()
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in tqdm(
            [r.args for r in requests], disable=disable_tqdm or not _terminal(), desc="megarecipe rolling"
        ):
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True)
            out.append(sum(lp for lp, _ in scores))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            f"the {MODEL_TYPE} model type scores log-likelihoods only; choose multiple-choice or perplexity tasks"
        )
