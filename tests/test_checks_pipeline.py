"""Chapter 06's exercise checkers pass the reference and fail known-wrong versions."""

from minisd.book import checks
from minisd.pipelines import classifier_free_guidance


def test_cfg_checker():
    assert checks.classifier_free_guidance(classifier_free_guidance)
    assert not checks.classifier_free_guidance(lambda u, c, g: c + g * (c - u))  # wrong base
    assert not checks.classifier_free_guidance(lambda u, c, g: u + g * (u - c))  # wrong direction


def test_input_block_index_checker():
    assert checks.input_block_index(lambda i, j, per: 1 + i * (per + 1) + j)
    assert not checks.input_block_index(lambda i, j, per: 1 + i * per + j)  # forgets the downsampler
    assert not checks.input_block_index(lambda i, j, per: i * (per + 1) + j)  # forgets conv_in
