"""Pictures in and out of the pipelines: tensors in [-1, 1] <-> PIL images and numpy arrays, and the
input pictures and masks of image-to-image and inpainting, with the mask blur and paste-back that
follow an inpainting run (chapter 10)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from minisd.errors import UserError


def to_pil(
    images: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)
) -> list[Image.Image]:
    """[B, 3, H, W] (or [3, H, W]) tensor in `value_range`, or [B, H, W, 3] array in [0, 1], to PIL images."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        x = x[None] if x.ndim == 3 else x
        lo, hi = value_range
        x = ((x - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # [B, H, W, C]
    else:
        x = np.asarray(images, dtype=np.float32)
        x = x[None] if x.ndim == 3 else x
    x = (x * 255).round().astype(np.uint8)
    return [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a) for a in x]


def _as_tensor(picture: Any, name: str) -> torch.Tensor:
    """One picture or a batch (PIL, numpy [H, W, C] / [B, H, W, C], torch [C, H, W] / [B, C, H, W], or a
    list of these) -> float32 [B, C, H, W] with values as given (uint8 and PIL scaled to [0, 1])."""
    if isinstance(picture, list | tuple):
        if not picture:
            raise UserError(f"{name} is an empty list: give at least one picture")
        parts = [_as_tensor(p, name) for p in picture]
        if len({p.shape[1:] for p in parts}) > 1:
            raise UserError(f"the pictures in {name} differ in size or channels: give pictures of one size")
        return torch.cat(parts)
    if isinstance(picture, Image.Image):
        picture = np.asarray(picture)  # [H, W] or [H, W, C] uint8
    if isinstance(picture, np.ndarray):
        if picture.ndim not in (2, 3, 4):
            raise UserError(f"{name} is a {picture.ndim}-d array: give [H, W, C] or [B, H, W, C]")
        array = picture[..., None] if picture.ndim == 2 else picture
        array = array[None] if array.ndim == 3 else array
        tensor = torch.from_numpy(np.array(array)).permute(0, 3, 1, 2)  # [B, C, H, W]
    elif isinstance(picture, torch.Tensor):
        if picture.ndim not in (2, 3, 4):
            raise UserError(f"{name} is a {picture.ndim}-d tensor: give [C, H, W] or [B, C, H, W]")
        tensor = picture[None] if picture.ndim == 2 else picture
        tensor = tensor[None] if tensor.ndim == 3 else tensor
        tensor = tensor.detach().cpu()
    else:
        raise TypeError(
            f"{name} must be a PIL image, a numpy array, a torch tensor or a list of them, "
            f"got {type(picture).__name__}"
        )
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255
    if tensor.dtype == torch.bool:
        return tensor.float()
    if not tensor.is_floating_point():
        raise UserError(f"{name} holds {tensor.dtype} values: give floats in [0, 1] or uint8 in [0, 255]")
    if not torch.isfinite(tensor).all():
        raise UserError(f"{name} holds NaN or inf values")
    return tensor.float()


def preprocess_image(image: Any, latent_channels: int = 4) -> torch.Tensor:
    """A picture (or batch) for image-to-image -> float32 [B, 3, H, W] in [-1, 1], read as diffusers'
    VaeImageProcessor reads it: values in [0, 1] (a tensor with negative values: already in [-1, 1]),
    PIL images in any mode converted to RGB. A tensor with `latent_channels` channels is taken as
    latents [B, 4, h, w] and returned as it is."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    elif isinstance(image, list | tuple):
        image = [i.convert("RGB") if isinstance(i, Image.Image) else i for i in image]
    x = _as_tensor(image, "image")
    if isinstance(image, torch.Tensor) and x.shape[1] == latent_channels:
        return x
    if x.shape[1] != 3:
        raise UserError(
            f"image has {x.shape[1]} channels: give an RGB picture (3 channels; drop an alpha channel "
            "with array[..., :3] or image.convert('RGB'))"
        )
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 or hi > 1:
        scale = " (values up to 255: divide by 255)" if hi > 1 else ""
        raise UserError(f"image values run from {lo:g} to {hi:g}; give them in [0, 1]{scale}")
    return x if lo < 0 else x * 2 - 1


def preprocess_mask(mask_image: Any) -> torch.Tensor:
    """An inpainting mask (or batch) -> float32 [B, 1, H, W] of 0 (keep) and 1 (repaint), binarised at
    0.5 as diffusers does. Values in [0, 1] (uint8 and PIL: 0-255); one channel, or three equal ones
    (a grey picture saved as RGB); PIL images in any mode are converted to greyscale."""
    if isinstance(mask_image, Image.Image):
        mask_image = mask_image.convert("L")
    elif isinstance(mask_image, list | tuple):
        mask_image = [m.convert("L") if isinstance(m, Image.Image) else m for m in mask_image]
    m = _as_tensor(mask_image, "mask_image")
    if m.shape[1] == 3:
        if not (torch.equal(m[:, 0], m[:, 1]) and torch.equal(m[:, 0], m[:, 2])):
            raise UserError(
                "mask_image has 3 different colour channels; a mask has one (1 = repaint): convert it to "
                "greyscale (PIL: mask.convert('L')) or pass one channel"
            )
        m = m[:, :1]
    if m.shape[1] != 1:
        raise UserError(f"mask_image has {m.shape[1]} channels: give one channel (1 = repaint, 0 = keep)")
    lo, hi = m.min().item(), m.max().item()
    if lo < 0 or hi > 1:
        scale = " (values up to 255: divide by 255)" if hi > 1 else ""
        raise UserError(f"mask_image values run from {lo:g} to {hi:g}; give them in [0, 1]{scale}")
    return (m >= 0.5).float()


def blur_mask(mask_image: Image.Image, blur_factor: int = 4) -> Image.Image:
    """A Gaussian blur of radius `blur_factor` pixels (diffusers' `VaeImageProcessor.blur`): a soft mask
    for `apply_overlay`, so the pasted-back picture fades into the repainted region instead of a hard
    edge. (The pipelines binarise their mask; blur the one you paste with.)"""
    if not isinstance(mask_image, Image.Image):
        mask_image = to_pil(_as_tensor(mask_image, "mask_image").clamp(0, 1).numpy().transpose(0, 2, 3, 1))[0]
    return mask_image.filter(ImageFilter.GaussianBlur(blur_factor))


def apply_overlay(mask: Any, init_image: Any, image: Any) -> Image.Image:
    """Paste the input picture back outside the mask (diffusers' `VaeImageProcessor.apply_overlay`):
    out = (1 - m) * init_image + m * image, with m the mask in [0, 1] (1 = repainted), so the kept
    region is the input itself, not its trip through the autoencoder. All three the same size."""
    m = _as_tensor(mask.convert("L") if isinstance(mask, Image.Image) else mask, "mask")[0]  # [1, H, W]
    pictures = []
    for picture, name in ((init_image, "init_image"), (image, "image")):
        x = _as_tensor(picture.convert("RGB") if isinstance(picture, Image.Image) else picture, name)[0]
        if x.shape[0] != 3 or x.shape[1:] != m.shape[1:]:
            raise UserError(
                f"{name} is {tuple(x.shape)} (channels, height, width) and the mask {tuple(m.shape)}: give "
                "RGB pictures of the mask's size"
            )
        pictures.append(x)
    if m.shape[0] != 1:
        raise UserError(f"the mask has {m.shape[0]} channels: give one (1 = repainted, 0 = keep)")
    init, new = pictures  # [3, H, W] in [0, 1]
    return to_pil((1 - m) * init + m * new, value_range=(0.0, 1.0))[0]
