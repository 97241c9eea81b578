"""Training engines: organelle fine-tuning (:func:`finetune`) and MAE pretraining (:func:`pretrain`).

Both take a config (:class:`TrainConfig` / :class:`PretrainConfig`, YAML presets in ``configs/``),
progress callbacks and a :class:`~napari_lightmycells.events.StopToken`, run in one process or under
``torchrun`` (DistributedDataParallel), and write ``best.pt`` / ``last.pt`` (resumable) to ``config.output``.
"""

from .config import PretrainConfig, TrainConfig, load_config, save_config
from .engine import TrainResult, config_from_checkpoint
from .finetune import finetune
from .pretrain import pretrain

__all__ = [
    "PretrainConfig",
    "TrainConfig",
    "TrainResult",
    "config_from_checkpoint",
    "finetune",
    "load_config",
    "pretrain",
    "save_config",
]
