"""Exercise checkers: run a reader's function against the package on random and edge inputs.

Each checker prints one line per case (pass/fail and max|diff|) and returns True when all pass.
One module per part of the book; every checker is reachable as `minisd.book.checks.<name>`.
"""

from minisd.book.checks.compare import compare_cases
from minisd.book.checks.controlnet import controlnet_param_count, guidance_window, mask_iou, sobel_gradients
from minisd.book.checks.core import (
    attention_head,
    bpe_merge,
    byte_encoder,
    classifier_free_guidance,
    ddim_step,
    diagonal_gaussian_kl,
    diagonal_gaussian_sample,
    geglu,
    input_block_index,
    noise_prediction_loss,
    pad_and_truncate,
    scaled_dot_product_attention,
)
from minisd.book.checks.lora import lora_conv, lora_linear, lora_param_count
from minisd.book.checks.prompts import mean_rescale, prompt_attention, prompt_chunks

__all__ = [
    "attention_head",
    "bpe_merge",
    "byte_encoder",
    "classifier_free_guidance",
    "compare_cases",
    "controlnet_param_count",
    "ddim_step",
    "diagonal_gaussian_kl",
    "diagonal_gaussian_sample",
    "geglu",
    "guidance_window",
    "input_block_index",
    "lora_conv",
    "lora_linear",
    "lora_param_count",
    "mask_iou",
    "mean_rescale",
    "noise_prediction_loss",
    "pad_and_truncate",
    "prompt_attention",
    "prompt_chunks",
    "scaled_dot_product_attention",
    "sobel_gradients",
]
