"""The tiny text-to-image model of the shapes world (chapter 07): its configs, sampling defaults and
the packaged weights (diffusers layout, trained on two CPU cores by `python -m minisd train-tiny`)."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = Path(__file__).parent / "weights" / "tiny_shapes"  # diffusers layout, trained by chapter 07
# the UNet of its inpainting variant (9 input channels; `python -m minisd train-inpainting`, chapter 10):
# the other parts are the base model's
TINY_INPAINT_UNET = Path(__file__).parent / "weights" / "tiny_shapes_inpaint" / "unet"


# the same recipe with another share of captions dropped (FID and CLIP score against guidance)
CAPTION_DROPOUTS = (0.0, 0.1, 0.5)


def tiny_model_path(caption_dropout: float = 0.1) -> Path:
    """The packaged tiny text-to-image model (the default of `python -m minisd generate`), trained with
    10% of its captions dropped; `caption_dropout` 0.0 or 0.5 gives its two siblings, the same recipe
    with no caption or half of them dropped."""
    if caption_dropout not in CAPTION_DROPOUTS:
        raise ValueError(
            f"caption_dropout={caption_dropout}: the packaged tiny models were trained with "
            f"{', '.join(f'{p:g}' for p in CAPTION_DROPOUTS)}; train another with "
            f"`python -m minisd train-tiny --caption-dropout {caption_dropout} --output DIR`"
        )
    folder = (
        TINY_MODEL
        if caption_dropout == 0.1
        else TINY_MODEL.parent / f"tiny_shapes_dropout{caption_dropout * 100:.0f}"
    )
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the packaged tiny model is missing from {folder}; train it again with `python -m minisd "
            f"train-tiny --caption-dropout {caption_dropout:g} --output {folder}` (about 90 minutes on 2 CPU "
            "cores), or pass --weights"
        )
    return folder


def tiny_inpaint_unet_path() -> Path:
    """The packaged 9-channel inpainting UNet of the tiny model (fp16 on disk): load the base model's
    pipeline and replace its unet with
    `UNet2DConditionModel.from_pretrained(tiny_inpaint_unet_path(), dtype=torch.float32)`."""
    if not (TINY_INPAINT_UNET / "config.json").is_file():
        raise FileNotFoundError(
            f"the packaged tiny inpainting UNet is missing from {TINY_INPAINT_UNET}; train it again with "
            "`python -m minisd train-inpainting OUT` and copy OUT/unet there"
        )
    return TINY_INPAINT_UNET


TINY_CONTROLNET = Path(__file__).parent / "weights" / "tiny_shapes_controlnet"  # chapter 11: object masks


def tiny_controlnet_path() -> Path:
    """The packaged ControlNet of the tiny model: it reads an object mask (white where objects go)."""
    if not (TINY_CONTROLNET / "config.json").is_file():
        raise FileNotFoundError(
            f"the packaged ControlNet is missing from {TINY_CONTROLNET}; train it again with "
            f"`python -m minisd train-controlnet {TINY_CONTROLNET}`"
        )
    return TINY_CONTROLNET


TINY_CLIP = Path(__file__).parent / "weights" / "tiny_clip"  # FID's features and CLIP score


def tiny_clip_path() -> Path:
    """The packaged tiny CLIP of the shapes world (fp16 on disk): `CLIPModel.from_pretrained(
    tiny_clip_path(), dtype=torch.float32)`, with `CLIPTokenizer()`."""
    if not (TINY_CLIP / "config.json").is_file():
        raise FileNotFoundError(
            f"the packaged tiny CLIP is missing from {TINY_CLIP}; train it again with "
            f"`python -m minisd train-clip {TINY_CLIP}` (about 25 minutes on one CPU core)"
        )
    return TINY_CLIP


TINY_CONFIGS: dict[str, dict] = {
    "text_encoder": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "layer_norm_eps": 1e-5,
        "hidden_act": "quick_gelu",
    },
    "vae": {  # three blocks, two downsamplers: f = 4, 32x32x3 pixels <-> 8x8x4 latents
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [16, 32, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 32,
        "scaling_factor": 1.0,  # replaced by 1/std of the trained autoencoder's latents
    },
    "unet": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        # as in SD: text enters at every level but the deepest; at 4x4 the padding tells each cell
        # where it is, which is what "above" and "left of" need
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "cross_attention_dim": 64,
        "norm_num_groups": 8,
    },
    "scheduler": {  # SD v1.5's noise schedule
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    },
}


# how `python -m minisd generate` samples the tiny model when no option says otherwise
TINY_SAMPLING = {"steps": 25, "guidance": 3.0, "scheduler": "ddim", "height": 32, "width": 32, "upscale": 8}
