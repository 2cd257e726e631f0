"""Training: shared loop pieces (data, EMA) and recipes (autoencoder, text-to-image, the tiny model,
a tiny CLIP)."""

from minisd.training.autoencoder import latent_scaling_factor, train_autoencoder
from minisd.training.clip import TINY_CLIP_CONFIG, train_clip, train_tiny_clip
from minisd.training.data import RenderedDataset, batch, batch_indices, encode_posteriors
from minisd.training.ema import EMA
from minisd.training.grounding import grounding_loss, grounding_targets
from minisd.training.text_to_image import save_model, train_text_to_image
from minisd.training.tiny import default_checkpoint_dir, train_tiny_model

__all__ = [
    "EMA",
    "TINY_CLIP_CONFIG",
    "RenderedDataset",
    "batch",
    "batch_indices",
    "default_checkpoint_dir",
    "encode_posteriors",
    "grounding_loss",
    "grounding_targets",
    "latent_scaling_factor",
    "save_model",
    "train_autoencoder",
    "train_clip",
    "train_text_to_image",
    "train_tiny_clip",
    "train_tiny_model",
]
