"""Composing the real configs for tests, pointed at small generated data."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[1]
SMALL_DATA = 0.03  # fraction of the full shapes dataset the tests generate


def compose_train(overrides: list[str], output_dir: Path, data_dir: Path):
    """conf/train.yaml with test overrides; hydra:runtime interpolations replaced by explicit paths."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={output_dir}",
                f"paths.data_dir={data_dir}",
                f"+data.prepare.scale={SMALL_DATA}",
                "logger=csv",
                "data.num_workers=0",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def resolved(cfg, key):
    return OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
