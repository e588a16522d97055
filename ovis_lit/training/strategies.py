"""Lightning strategies configured for Ovis training."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    """Pure FSDP2: one data-parallel mesh dimension over every process of every node (no tensor parallelism).

    ModelParallelStrategy's "auto" sizes mean data-parallel across nodes and tensor-parallel within a node; here
    the data-parallel size is the world size, which is only known once the cluster environment is set up. The
    LightningModule shards itself in `configure_model` (ovis_lit.training.sharding) over this mesh.
    """

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("save_distributed_checkpoint", True)
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
