"""Block diagrams for chapter 04, drawn with matplotlib: the UNet's "U", a ResNet block, a transformer block.

Each function returns a matplotlib Figure; the UNet diagram reads its levels, channels, block types and
resolutions from a UNet config (a `config.json` dict), so the same code draws v1.5 and the tiny model.
"""

from __future__ import annotations

# one colour per kind of thing, shared by the three diagrams
TIME, TEXT, CONV, NORM, ATTN, SKIP = "#f4a259", "#8cc084", "#9ecae1", "#dadaeb", "#f7b7c3", "0.45"


def _setup(width: float, height: float, xlim: tuple, ylim: tuple):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.set(xlim=xlim, ylim=ylim)
    ax.axis("off")
    return fig, ax


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: float = 8.5, **kw) -> None:
    """A rounded box centred on (x, y) with centred text."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=color,
            ec="0.3",
            lw=0.8,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size, **kw)


def _arrow(ax, start: tuple, end: tuple, color: str = "0.25", style: str = "-|>", **kw) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops=dict(arrowstyle=style, color=color, lw=1.1, shrinkA=0, shrinkB=0, **kw),
    )


def _plus(ax, x: float, y: float, r: float = 0.17) -> None:
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, fc="white", ec="0.25", lw=1.0, zorder=3))
    ax.text(x, y, "+", ha="center", va="center", fontsize=11, zorder=4)


def level_skips(block_out_channels: list[int], layers_per_block: int) -> list[list[int]]:
    """The channels of the tensors the down path saves at each level (conv_in's output, each resnet's
    or resnet+transformer's, the downsampler's that lands on the level below), top level first."""
    levels = []
    for i, ch in enumerate(block_out_channels):
        first = block_out_channels[0] if i == 0 else block_out_channels[i - 1]  # conv_in or the downsampler
        levels.append([first] + [ch] * layers_per_block)
    return levels


def draw_unet(config: dict, title: str | None = None):
    """The U of a UNet config: down blocks on the left, up blocks on the right, the skips between them,
    where the time embedding and the text come in. Resolutions are those of a `sample_size` latent."""
    channels = list(config["block_out_channels"])
    n, side = len(channels), config.get("sample_size", 64)
    down_types, up_types = config["down_block_types"], config["up_block_types"]
    layers, c0 = config["layers_per_block"], channels[0]
    fig, ax = _setup(13.5, 1.55 * n + 3.9, (-0.6, 17), (-2.4, 1.55 * n + 2.0))
    ys = [1.55 * (n - 1 - i) + 1.4 for i in range(n)]  # level 0 at the top
    y_mid, w, h = 0.0, 4.2, 1.12
    xs = [2.75 + 0.55 * i for i in range(n)]
    top = ys[0] + 1.25

    for i, y in enumerate(ys):  # the resolution of each level, in the left margin
        ax.text(-0.55, y, f"{side >> i}×{side >> i}", ha="left", va="center", fontsize=9, color="0.35")

    skips = level_skips(channels, layers)
    for i, (y, ch, kind) in enumerate(zip(ys, channels, down_types, strict=True)):
        cross = kind.startswith("CrossAttn")
        inner = f"{layers} × (ResNet → Transformer)" if cross else f"{layers} × ResNet"
        down = "\n↓ stride-2 conv" if i < n - 1 else ""
        _box(ax, xs[i], y, w, h, f"down_blocks.{i}: {kind}, {ch} ch\n{inner}{down}", CONV, size=8)
        j = n - 1 - i  # the up block on the same level
        up_kind = up_types[j]
        inner = (
            f"{layers + 1} × (cat skip → ResNet → Transformer)"
            if up_kind.startswith("CrossAttn")
            else (f"{layers + 1} × (cat skip → ResNet)")
        )
        up = "\n↑ nearest ×2 + conv" if j < n - 1 else ""
        _box(
            ax, 17 - xs[i], y, w, h, f"up_blocks.{j}: {up_kind}, {channels[i]} ch\n{inner}{up}", CONV, size=8
        )
        for x0, c in ((xs[i], cross), (17 - xs[i], up_kind.startswith("CrossAttn"))):  # badges
            _box(ax, x0 - w / 2 + 0.22, y + h / 2, 0.32, 0.24, "t", TIME, size=7)
            if c:
                _box(ax, x0 - w / 2 + 0.68, y + h / 2, 0.46, 0.24, "text", TEXT, size=7)
        _arrow(ax, (xs[i] + w / 2, y - 0.05), (17 - xs[i] - w / 2, y - 0.05), color=SKIP, ls="--")
        label = " + ".join(str(c) for c in skips[i])
        ax.text(
            8.5,
            y + 0.08,
            f"{len(skips[i])} skips: {label} ch",
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.3",
        )
        if i < n - 1:
            _arrow(ax, (xs[i] + 0.3, y - h / 2), (xs[i + 1] + 0.3, ys[i + 1] + h / 2))
            _arrow(ax, (17 - xs[i + 1] - 0.3, ys[i + 1] + h / 2), (17 - xs[i] - 0.3, y - h / 2))

    mid_w = 5.2
    _box(
        ax,
        8.5,
        y_mid,
        mid_w,
        0.8,
        f"mid_block: ResNet → Transformer → ResNet\n{channels[-1]} ch, {side >> (n - 1)}×{side >> (n - 1)}",
        CONV,
        size=8,
    )
    _box(ax, 8.5 - mid_w / 2 + 0.22, y_mid + 0.4, 0.32, 0.24, "t", TIME, size=7)
    _box(ax, 8.5 - mid_w / 2 + 0.68, y_mid + 0.4, 0.46, 0.24, "text", TEXT, size=7)
    _arrow(ax, (xs[-1], ys[-1] - h / 2), (8.5 - mid_w / 2 + 1.3, y_mid + 0.4))
    _arrow(ax, (8.5 + mid_w / 2 - 1.3, y_mid + 0.4), (17 - xs[-1], ys[-1] - h / 2))

    # input and output convolutions above the top level
    _box(ax, xs[0], top, w, 0.5, f"conv_in: 4 → {c0} ch", CONV, size=8)
    _box(ax, 17 - xs[0], top, w, 0.5, f"GroupNorm → SiLU → conv_out: {c0} → 4 ch", CONV, size=8)
    _arrow(ax, (xs[0], top - 0.25), (xs[0], ys[0] + h / 2))
    _arrow(ax, (17 - xs[0], ys[0] + h / 2), (17 - xs[0], top - 0.25))
    ax.text(
        xs[0], top + 0.75, f"noisy latent z_t  [B, 4, {side}, {side}]", ha="center", va="center", fontsize=8.5
    )
    _arrow(ax, (xs[0], top + 0.6), (xs[0], top + 0.25))
    ax.text(
        17 - xs[0],
        top + 0.75,
        f"predicted noise  [B, 4, {side}, {side}]",
        ha="center",
        va="center",
        fontsize=8.5,
    )
    _arrow(ax, (17 - xs[0], top + 0.25), (17 - xs[0], top + 0.6))

    # the two conditioning inputs
    temb = 4 * c0
    _box(ax, 8.5, top, 4.6, 0.55, f"timestep t → {c0} sinusoids → MLP → temb [B, {temb}]", TIME, size=8)
    ctx = config.get("cross_attention_dim", 768)
    _box(ax, 8.5, y_mid - 1.4, 5.4, 0.55, f"text: CLIP's last hidden state [B, 77, {ctx}]", TEXT, size=8)
    _arrow(ax, (8.5, y_mid - 1.12), (8.5, y_mid - 0.4), color="#3b7d3b")
    ax.text(
        0.05, -2.15,
        "t badge: the block's ResNets add a projection of temb to every pixel.   text badge: its "
        "Transformers' cross-attention reads the text.\ndashed: the skip connections, concatenated to the "
        "input of the up path's ResNets (last saved, first used).   Left: each level's resolution "
        "(latent pixels).",
        fontsize=8, color="0.3", va="bottom",
    )  # fmt: skip
    ax.set_title(title or f"UNet: block_out_channels {channels}, layers_per_block {layers}", fontsize=10)
    return fig


def draw_resnet_block(in_channels: int = 320, out_channels: int = 640, temb_channels: int = 1280):
    """ResnetBlock2D: GroupNorm → SiLU → conv, + the projected time embedding, GroupNorm → SiLU → conv,
    plus the shortcut (a 1x1 conv when the channel count changes)."""
    fig, ax = _setup(7.6, 7.0, (0, 10), (-0.6, 10.6))
    x, w = 4.2, 4.4
    steps = [
        (9.2, f"GroupNorm(32, {in_channels}) → SiLU", NORM),
        (8.1, f"conv1: 3×3, {in_channels} → {out_channels}", CONV),
        (5.5, f"GroupNorm(32, {out_channels}) → SiLU → dropout", NORM),
        (4.4, f"conv2: 3×3, {out_channels} → {out_channels}", CONV),
    ]
    ax.text(x, 10.35, f"x  [B, {in_channels}, H, W]", ha="center", va="center", fontsize=9)
    _arrow(ax, (x, 10.15), (x, 9.2 + 0.3))
    for (y, text, color), nxt in zip(steps, [8.1, 6.8, 4.4, 2.0], strict=True):
        _box(ax, x, y, w, 0.6, text, color)
        _arrow(ax, (x, y - 0.3), (x, nxt + (0.3 if nxt in (8.1, 4.4) else 0.17)))
    _plus(ax, x, 6.8)
    _arrow(ax, (x, 6.8 - 0.17), (x, 5.5 + 0.3))
    # the time embedding, from the left
    _box(ax, 1.2, 7.55, 2.2, 0.5, f"temb [B, {temb_channels}]", TIME, size=8)
    _box(ax, 1.2, 6.8, 2.2, 0.5, f"SiLU → Linear\n{temb_channels} → {out_channels}", TIME, size=8)
    _arrow(ax, (1.2, 7.3), (1.2, 7.05))
    _arrow(ax, (2.3, 6.8), (x - 0.17, 6.8))
    ax.text(
        0.15,
        6.4,
        f"[B, {out_channels}, 1, 1]: the same\nvalue at every pixel",
        fontsize=7.5,
        va="top",
        color="0.3",
    )
    # the shortcut, on the right
    xr = 8.6
    short = (
        f"conv_shortcut\n1×1, {in_channels} → {out_channels}" if in_channels != out_channels else "identity"
    )
    ax.plot([x, xr, xr], [9.95, 9.95, 6.0], color="0.25", lw=1.1)
    _box(ax, xr, 5.4, 2.2, 0.8, short, CONV, size=8)
    ax.plot([xr, xr], [4.98, 2.0], color="0.25", lw=1.1)
    _arrow(ax, (xr, 2.0), (x + 0.17, 2.0))
    ax.text(xr + 0.1, 8.0, "shortcut", rotation=90, fontsize=8, va="center", color="0.3")
    _plus(ax, x, 2.0)
    _arrow(ax, (x, 2.0 - 0.17), (x, 0.9))
    ax.text(x, 0.65, f"out  [B, {out_channels}, H, W]", ha="center", va="center", fontsize=9)
    ax.text(
        0.1,
        -0.4,
        "conv1 and conv2 keep H and W (padding 1); only the shortcut's conv is learned when C_in ≠ C_out.",
        fontsize=7.5,
        color="0.3",
    )
    ax.set_title(
        f"ResnetBlock2D({in_channels} → {out_channels}), as in every UNet block", fontsize=10, pad=14
    )
    return fig


def draw_transformer_block(channels: int = 320, heads: int = 8, cross_attention_dim: int = 768):
    """Transformer2DModel around one BasicTransformerBlock: the map as H*W tokens, self-attention,
    cross-attention to the text, a GEGLU feed-forward, each after a LayerNorm and with a residual."""
    fig, ax = _setup(8.4, 9.6, (0, 11), (-0.4, 14.2))
    x, w, xr = 5.0, 4.6, 8.2
    d = channels // heads
    ax.text(x, 13.9, f"feature map  [B, {channels}, H, W]", ha="center", va="center", fontsize=9)
    _box(ax, x, 13.05, w, 0.55, "GroupNorm(32, eps 1e-6) → proj_in (1×1 conv)", NORM)
    _box(ax, x, 12.05, w, 0.55, f"reshape: [B, H·W, {channels}] tokens", "white")
    _arrow(ax, (x, 13.7), (x, 13.33))
    _arrow(ax, (x, 12.77), (x, 12.33))
    # the three sub-layers, each pre-LayerNorm with a residual
    subs = [
        (10.0, f"attn1: self-attention, {heads} heads × {d}\nQ, K, V from the pixels", ATTN),
        (7.0, f"attn2: cross-attention, {heads} heads × {d}\nQ from the pixels, K, V from the text", ATTN),
        (4.0, f"feed-forward: GEGLU {channels} → 2 × {4 * channels},\nvalue · GELU(gate), Linear "
         f"{4 * channels} → {channels}", CONV),
    ]  # fmt: skip
    y_in = 11.77
    for k, (y, text, color) in enumerate(subs, start=1):
        split = y + 1.25
        _arrow(ax, (x, y_in), (x, y + 0.9 + 0.22))
        _box(ax, x, y + 0.9, w, 0.45, f"LayerNorm (norm{k})", NORM)
        _arrow(ax, (x, y + 0.68), (x, y + 0.38))
        _box(ax, x, y, w, 0.75, text, color)
        _arrow(ax, (x, y - 0.38), (x, y - 0.83))
        _plus(ax, x, y - 1.0)
        ax.plot([x, xr, xr], [split, split, y - 1.0], color="0.25", lw=1.1)
        _arrow(ax, (xr, y - 1.0), (x + 0.17, y - 1.0))
        y_in = y - 1.17
    ax.text(xr + 0.12, 8.5, "residuals", rotation=90, fontsize=8, va="center", color="0.3")
    _box(ax, 1.25, 7.0, 2.1, 0.75, f"text\n[B, 77, {cross_attention_dim}]", TEXT, size=8)
    _arrow(ax, (2.3, 7.0), (x - w / 2, 7.0), color="#3b7d3b")
    ax.text(
        1.25,
        6.35,
        f"to_k, to_v:\n{cross_attention_dim} → {channels}",
        ha="center",
        va="top",
        fontsize=7.5,
        color="0.3",
    )
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((2.35, 2.65), 6.25, 8.8, fill=False, ec="0.55", ls=":", lw=1.0))
    ax.text(
        2.68,
        7.0 - 1.9,
        "BasicTransformerBlock",
        rotation=90,
        fontsize=8.5,
        color="0.35",
        style="italic",
        va="center",
    )
    _box(ax, x, 1.35, w, 0.7, f"reshape back to [B, {channels}, H, W]\n→ proj_out (1×1 conv)", NORM)
    _arrow(ax, (x, y_in), (x, 1.7))
    _plus(ax, x, 0.45)
    _arrow(ax, (x, 1.0), (x, 0.62))
    xo = 10.3
    ax.plot([x + 1.9, xo, xo], [13.9, 13.9, 0.45], color="0.55", lw=1.1, ls="--")
    _arrow(ax, (xo, 0.45), (x + 0.17, 0.45), color="0.55")
    ax.text(xo + 0.1, 3.0, "outer residual", rotation=90, fontsize=8, va="center", color="0.4")
    ax.text(x, -0.2, f"out  [B, {channels}, H, W]", ha="center", va="center", fontsize=9)
    ax.set_title(f"Transformer2DModel({channels} ch) with its BasicTransformerBlock", fontsize=10, pad=14)
    return fig
