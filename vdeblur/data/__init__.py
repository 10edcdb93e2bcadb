"""Training and demo data: synthetic motion blur from still images (see :mod:`.synthetic_blur`)."""

from vdeblur.data.synthetic_blur import (
    COLOUR_IMAGES,
    DEMO_SPLIT_SEED,
    GREY_IMAGES,
    BlurSettings,
    average_linear,
    demo_sources,
    linear_to_srgb,
    make_clip,
    natural_images,
    render_clip,
    split_sources,
    srgb_to_linear,
)

__all__ = [
    "COLOUR_IMAGES",
    "DEMO_SPLIT_SEED",
    "GREY_IMAGES",
    "BlurSettings",
    "average_linear",
    "demo_sources",
    "linear_to_srgb",
    "make_clip",
    "natural_images",
    "render_clip",
    "split_sources",
    "srgb_to_linear",
]
