"""Training and demo data: synthetic motion blur from still images (see :mod:`.synthetic_blur`) and
the bundled demo assets (see :mod:`.demo`). Needs numpy only (scikit-image for the source images)."""

from vdeblur.data.demo import DEMO_DIR, DemoAssets, demo_assets
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
    "DEMO_DIR",
    "DemoAssets",
    "demo_assets",
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
