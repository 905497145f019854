"""Expert trajectories for trajectory matching (MTT, DATM): training, compact per-expert files,
the buffer index and streaming reads."""

from jaxdd.experts.buffer import (FORMAT, INDEX, ExpertBuffer, dataset_record, expert_file, params_to_vector,
                                  flatten_stacked, network_record, param_layout, vector_to_params)
from jaxdd.experts.training import ExpertConfig, expert_rows, train_experts

__all__ = ["FORMAT", "INDEX", "ExpertBuffer", "dataset_record", "expert_file", "params_to_vector", "flatten_stacked",
           "network_record", "param_layout", "vector_to_params", "ExpertConfig", "expert_rows", "train_experts"]
