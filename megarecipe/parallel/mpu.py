"""DeepSpeed's `mpu` interface over megatron-core's parallel_state.

DeepSpeed asks for a "model parallel" group (to reduce gradient norms across the ranks that hold different
parts of one model) and data-parallel groups (to reduce gradients). megatron's model-parallel group spans
tensor and pipeline ranks, which is what DeepSpeed's norm reduction needs.
"""

import torch.distributed as dist
from megatron.core import parallel_state as ps


class MegatronMPU:
    @staticmethod
    def get_data_parallel_group():
        return ps.get_data_parallel_group()

    @staticmethod
    def get_data_parallel_rank():
        return ps.get_data_parallel_rank()

    @staticmethod
    def get_data_parallel_world_size():
        return ps.get_data_parallel_world_size()

    @staticmethod
    def get_model_parallel_group():
        return ps.get_model_parallel_group()

    @staticmethod
    def get_model_parallel_rank():
        return dist.get_rank(group=ps.get_model_parallel_group())

    @staticmethod
    def get_model_parallel_world_size():
        return dist.get_world_size(group=ps.get_model_parallel_group())

    @staticmethod
    def get_tensor_model_parallel_group():
        return ps.get_tensor_model_parallel_group()

    @staticmethod
    def get_tensor_model_parallel_rank():
        return ps.get_tensor_model_parallel_rank()

    @staticmethod
    def get_tensor_model_parallel_world_size():
        return ps.get_tensor_model_parallel_world_size()

    @staticmethod
    def get_tensor_model_parallel_src_rank():
        return ps.get_tensor_model_parallel_src_rank()

    @staticmethod
    def get_pipeline_model_parallel_group():
        return ps.get_pipeline_model_parallel_group()

    @staticmethod
    def get_pipeline_model_parallel_rank():
        return ps.get_pipeline_model_parallel_rank()

    @staticmethod
    def get_pipeline_model_parallel_world_size():
        return ps.get_pipeline_model_parallel_world_size()
