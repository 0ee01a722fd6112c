"""The CPU layer for megatron-core must leave torch's device contexts, and so Hugging Face loading, working."""

from tests.helpers import REPO, env


def test_cpu_layer_keeps_device_contexts_and_hf_non_persistent_buffers(tmp_path):
    """Regression: the factory wrappers once hid torch.tensor & co. from `with torch.device("meta")`, so
    transformers' from_pretrained skipped its meta-device init and left rotary inv_freq as uninitialised memory.
    In a process of its own (tests/unit/cpu_compat_job.py): apply() patches torch for the whole process."""
    from megarecipe.launch import direct

    done = direct.captured([str(tmp_path / "hf")], 1, env(), str(REPO), 300, module="tests.unit.cpu_compat_job")
    assert done.returncode == 0, done.stderr[-3000:]
