"""vdeblur: deploy video-deblurring models (export, engines, streaming with recurrent state)."""

__version__ = "0.1.0"
