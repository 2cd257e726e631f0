"""Chapter 04's exercise checkers pass a correct answer and reject plausible wrong ones."""

from minisd.book import checks

# --- up_block_skips: which skip each up-path resnet concatenates --------------------------------------


def _saved(channels, layers):
    """The down path's saved widths, in saving order: conv_in, each resnet, each downsampler."""
    saved = [channels[0]]
    for i, ch in enumerate(channels):
        saved += [ch] * layers + ([ch] if i < len(channels) - 1 else [])
    return saved


def skips_correct(channels, layers):
    stack, out, below = _saved(channels, layers), [], channels[-1]
    for ch in reversed(channels):
        block = []
        for _ in range(layers + 1):
            block.append((below, stack.pop()))
            below = ch
        out.append(block)
    return out


def skips_first_in_first_out(channels, layers):
    stack, out, below = _saved(channels, layers), [], channels[-1]
    for ch in reversed(channels):
        block = []
        for _ in range(layers + 1):
            block.append((below, stack.pop(0)))
            below = ch
        out.append(block)
    return out


def skips_all_of_the_level(channels, layers):  # forgets that the last skip comes from the level above
    out, below = [], channels[-1]
    for ch in reversed(channels):
        out.append([(below if j == 0 else ch, ch) for j in range(layers + 1)])
        below = ch
    return out


def skips_one_per_layer(channels, layers):  # as many resnets as on the down path
    return [block[:layers] for block in skips_correct(channels, layers)]


def skips_below_is_the_level(channels, layers):  # the first resnet reads the level's width from below
    return [
        [(ch, skip) for _, skip in block]
        for block, ch in zip(skips_correct(channels, layers), reversed(channels), strict=True)
    ]


def test_up_block_skips_accepts_a_correct_answer_as_lists_or_tuples():
    assert checks.up_block_skips(skips_correct)
    assert checks.up_block_skips(lambda c, n: tuple(tuple(b) for b in skips_correct(c, n)))


def test_up_block_skips_rejects_wrong_bookkeeping(capsys):
    for wrong in [
        skips_first_in_first_out,
        skips_all_of_the_level,
        skips_one_per_layer,
        skips_below_is_the_level,
    ]:
        assert not checks.up_block_skips(wrong), wrong.__name__
    assert "FAIL up_block_skips [SD v1.5" in capsys.readouterr().out
    assert not checks.up_block_skips(lambda c, n: None)


# --- resnet_param_count -------------------------------------------------------------------------------


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def resnet_params(cin, cout, temb):
    n = 2 * cin + conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3)
    n += temb * cout + cout if temb else 0
    return n + (conv(cin, cout, 1) if cin != cout else 0)


def test_resnet_param_count_accepts_the_formula():
    assert checks.resnet_param_count(resnet_params)


def test_resnet_param_count_rejects_plausible_mistakes():
    wrong = {
        "no biases": lambda i, o, t: (
            resnet_params(i, o, t) - (3 * o + (o if t else 0) + (o if i != o else 0))
        ),
        "no norms": lambda i, o, t: resnet_params(i, o, t) - 2 * i - 2 * o,
        "shortcut always": lambda i, o, t: resnet_params(i, o, t) + (conv(i, o, 1) if i == o else 0),
        "shortcut never": lambda i, o, t: resnet_params(i, o, t) - (conv(i, o, 1) if i != o else 0),
        "a 3x3 shortcut": lambda i, o, t: resnet_params(i, o, t) + (9 * i * o - i * o if i != o else 0),
        "time projection always": lambda i, o, t: resnet_params(i, o, t or 1280),
    }
    for name, candidate in wrong.items():
        assert not checks.resnet_param_count(candidate), name


# --- unet_forward -------------------------------------------------------------------------------------


def forward(unet, sample, timesteps, text, *, pop_first=False, mid=True, norm_out=True, conv_in_skip=True):
    temb = unet.time_embedding(unet.time_proj(timesteps))
    x = unet.conv_in(sample)
    skips = [x] if conv_in_skip else []
    for block in unet.down_blocks:
        x, saved = block(x, temb, text)
        skips += saved
    if mid:
        x = unet.mid_block(x, temb, text)
    for block in unet.up_blocks:
        k = len(block.resnets)
        mine, skips = (skips[:k], skips[k:]) if pop_first else (skips[-k:], skips[:-k])
        x = block(x, tuple(mine), temb, text)
    if norm_out:
        x = unet.conv_act(unet.conv_norm_out(x))
    return unet.conv_out(x)


def test_unet_forward_accepts_a_forward_from_the_blocks():
    assert checks.unet_forward(forward)


def test_unet_forward_rejects_wrong_assemblies(capsys):
    def calls_the_model(unet, sample, timesteps, text):
        return unet(sample, timesteps, text).sample

    for wrong in [
        lambda *a: forward(*a, pop_first=True),
        lambda *a: forward(*a, mid=False),
        lambda *a: forward(*a, norm_out=False),
        lambda *a: forward(*a, conv_in_skip=False),
        calls_the_model,
    ]:
        assert not checks.unet_forward(wrong)
    assert "assemble the forward pass from the blocks" in capsys.readouterr().out
