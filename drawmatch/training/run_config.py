"""The keys every training job shares (train, verify, classify): one declaration, inherited.

Each job's config derives from `TrainingRunConfig`, so its users type the same keys as before
(`lr=`, `epochs=`, `model.backbone=`, ...) and old runs' saved configs load unchanged; a job
whose default differs declares it with `redeclare` (same range and help).
"""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.core.config import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Config,
    ConfigError,
    folder_name,
    section,
    setting,
)
from drawmatch.models.embedder import ModelConfig
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class TrainingRunConfig(Config):
    """What every training run needs: the output root, a run name, the model, the optimiser,
    the image sizes, early stopping, the Ray Train workers and a seed. Training images are
    resized to `train_resize` and cropped to `train_crop` px."""

    out: str = setting("drawmatch-out", help="output root")
    run_name: str | None = setting(None, help="run folder name (null: the job picks one)")
    model: ModelConfig = section(ModelConfig)
    lr: float = setting(1e-5, gt=0, le=1, help="learning rate of the backbone")
    weight_decay: float = setting(1e-4, ge=0, le=1, help="weight decay")
    epochs: int = setting(5, ge=0, help="training epochs")
    batch_size: int = setting(4, ge=1, help="images (or anchors) per training batch and worker")
    train_resize: int = setting(
        330, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE, help="training images: resized side in px"
    )
    train_crop: int = setting(
        280, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE, help="training images: crop side in px"
    )
    patience: int = setting(3, ge=1, help="epochs without improvement before stopping")
    eval_batch_size: int = setting(16, ge=1, help="images per evaluation batch")
    num_workers: int = setting(1, ge=1, help="Ray Train workers")
    use_gpu: bool = setting(False, help="one GPU per worker")
    cpus_per_worker: float = setting(1.0, gt=0, le=1024, help="CPUs per Ray Train worker")
    seed: int = setting(0, ge=0, help="random seed")
    ray: RayConfig = section(RayConfig)

    def check(self) -> None:
        folder_name("run_name", self.run_name)
        if self.train_crop > self.train_resize:
            raise ConfigError(
                f"train_crop: {self.train_crop} must not exceed train_resize ({self.train_resize})"
            )
