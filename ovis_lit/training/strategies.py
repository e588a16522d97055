"""Lightning strategies configured for Ovis training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from ..interop.safe_dcp import dcp_load, read_dcp_metadata, read_torch_file

LIGHTNING_META_FILE = "meta.pt"  # the non-tensor part of Lightning's sharded checkpoints


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

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume (`ckpt_path=`) without running code from the checkpoint.

        Lightning reads a sharded directory with torch.distributed.checkpoint's own reader, which unpickles the
        shard index and non-tensor entries with the full pickle module. Here the same steps as Lightning's (model,
        then each optimiser; `meta.pt` is read first) go through `safe_dcp` and weights-only loads. A single-file
        checkpoint stays with Lightning, always weights-only.
        """
        path = Path(self.broadcast(checkpoint_path))
        if not path.is_dir():
            return super().load_checkpoint(path, weights_only=True)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        read_dcp_metadata(path)  # refused here, before any state is touched, if it would run code
        meta = read_torch_file(path / LIGHTNING_META_FILE)
        if not isinstance(meta, dict):
            raise ValueError(f"{path / LIGHTNING_META_FILE}: not Lightning's checkpoint metadata")
        assert self.model is not None and self.lightning_module is not None
        module_state = {"state_dict": get_model_state_dict(self.model)}
        dcp_load(module_state, path)
        self.model.load_state_dict(module_state["state_dict"], strict=self.lightning_module.strict_loading)
        for idx, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{idx}"  # Lightning's key for each optimiser in a sharded checkpoint
            optim_state = {key: get_optimizer_state_dict(self.model, optimizer)}
            dcp_load(optim_state, path)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=optim_state[key],
                                     options=StateDictOptions(cpu_offload=True))
        return meta  # what Lightning's loader returns: everything that is not model or optimiser state
