"""megarecipe: data-constrained LLM pre-training (megatron-core Llama under DeepSpeed ZeRO), ensembles,
distillation and scaling-law asymptotes."""

import warnings as _warnings

__version__ = "0.1.0"

# The one place where warnings are silenced: known noise from megatron-core and torch on machines without
# Transformer Engine or Apex, each by its message (a regex matched at the start; no colons, the test suite
# passes them to pytest's filterwarnings too). Every other warning - a deprecation in the internals the CPU
# layer patches, say - still shows.
NOISY_WARNINGS = (
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    r"`torch\.jit\.script_method` is deprecated",
    r"The following imports from `dynamic_context\.py`",
    r"The 'megatron\.core\.transformer\.custom_layers\.transformer_engine'",
    r"full scope is deprecated",
    r"MLP requires ffn_hidden_size",
    r".*tp_group is None, using default tp group",
    r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
)
for _message in NOISY_WARNINGS:
    _warnings.filterwarnings("ignore", message=_message)
