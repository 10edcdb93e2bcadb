"""The torch-free contract at the bottom of vdeblur: what every layer agrees on.

So far: :mod:`vdeblur.contract.device`, the one probe of this machine's processor (model, ISA
features, whether int8 kernels saturate) that builds, benchmarks and the runtime record and use.
"""
