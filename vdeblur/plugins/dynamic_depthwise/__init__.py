"""The `vdeblur::DynamicDepthwise` op: spec.py (its OpSpec), reference.py, kernel.py, README.md."""
