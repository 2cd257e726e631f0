"""Exercise checkers: run a reader's function against the package on random and edge inputs.

Each checker prints one line per case (pass/fail and max|diff|) and returns True when all pass.
One module per part of the book; every checker is reachable as `minisd.book.checks.<name>`.
"""

from minisd.book.checks.compare import compare_cases
from minisd.book.checks.controlnet import controlnet_param_count, guidance_window, mask_iou, sobel_gradients
from minisd.book.checks.core import (
    bpe_merge,
    ddim_step,
    diagonal_gaussian_kl,
    diagonal_gaussian_sample,
    input_block_index,
    noise_prediction_loss,
)
from minisd.book.checks.editing import blend_known, latent_mask, strength_steps
from minisd.book.checks.lora import lora_conv, lora_linear, lora_param_count
from minisd.book.checks.measuring import clip_score_from_features, info_nce, patchify
from minisd.book.checks.pipeline import image_latents, sampling_loop, unet_evaluations
from minisd.book.checks.prompts import mean_rescale, prompt_attention, prompt_chunks
from minisd.book.checks.schedulers import dpm_solver_2m_step, euler_step
from minisd.book.checks.text_encoder import changed_outputs, clip_skip_state, text_encoder_params
from minisd.book.checks.tokenizer import first_cut_word, token_decoder
from minisd.book.checks.training import ema_update, scaling_factor
from minisd.book.checks.unet import resnet_param_count, unet_forward, up_block_skips
from minisd.book.checks.vae import adaptive_gan_weight, latent_shape, tile_blend

__all__ = [
    "adaptive_gan_weight",
    "blend_known",
    "bpe_merge",
    "changed_outputs",
    "clip_skip_state",
    "clip_score_from_features",
    "compare_cases",
    "controlnet_param_count",
    "ddim_step",
    "diagonal_gaussian_kl",
    "diagonal_gaussian_sample",
    "dpm_solver_2m_step",
    "ema_update",
    "euler_step",
    "first_cut_word",
    "guidance_window",
    "image_latents",
    "info_nce",
    "input_block_index",
    "latent_shape",
    "latent_mask",
    "lora_conv",
    "lora_linear",
    "lora_param_count",
    "mask_iou",
    "patchify",
    "mean_rescale",
    "noise_prediction_loss",
    "prompt_attention",
    "prompt_chunks",
    "resnet_param_count",
    "sampling_loop",
    "scaling_factor",
    "sobel_gradients",
    "strength_steps",
    "text_encoder_params",
    "tile_blend",
    "token_decoder",
    "unet_evaluations",
    "unet_forward",
    "up_block_skips",
]
