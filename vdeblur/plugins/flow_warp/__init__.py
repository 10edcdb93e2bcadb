"""The `vdeblur::FlowWarp` op: spec.py (its OpSpec), reference.py, kernel.py, README.md."""
