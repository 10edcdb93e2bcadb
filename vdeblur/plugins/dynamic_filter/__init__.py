"""The `vdeblur::DynamicFilter` op: spec.py (its OpSpec), reference.py, kernel.py, README.md."""
