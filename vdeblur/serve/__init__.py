"""`vdeblur serve` (the KServe v2 / Triton inference protocol over gRPC and HTTP/REST) and
`vdeblur triton-repo` (the same models as a Triton Inference Server model repository).

- :mod:`.protocol`: what a request may hold and what an answer holds (transport-neutral);
- :mod:`.batcher`: one backend per model, shared by its sequences, batched across them;
- :mod:`.sequences`: each sequence is one :class:`vdeblur.runtime.stream.Stream` with its own state;
- :mod:`.service`: auth, metadata, config, metrics, inference, for both transports;
- :mod:`.grpc_server`, :mod:`.http_server`: the two endpoints; :mod:`.server`: the lifecycle;
- :mod:`.triton_repo`: the Triton model repository writer.

Needs the ``[serve]`` extra (tritonclient's protocol definitions and grpcio).
"""
