"""Training and demo data: synthetic motion blur from still images (see :mod:`.synthetic_blur`)."""

from vdeblur.data.synthetic_blur import (
    COLOUR_IMAGES,
    GREY_IMAGES,
    BlurSettings,
    average_linear,
    linear_to_srgb,
    make_clip,
    natural_images,
    split_sources,
    srgb_to_linear,
)

__all__ = [
    "COLOUR_IMAGES",
    "GREY_IMAGES",
    "BlurSettings",
    "average_linear",
    "linear_to_srgb",
    "make_clip",
    "natural_images",
    "split_sources",
    "srgb_to_linear",
]
