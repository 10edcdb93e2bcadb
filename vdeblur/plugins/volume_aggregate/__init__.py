"""The `vdeblur::VolumeAggregate` op: spec.py (its OpSpec), reference.py, kernel.py, README.md."""
