"""State without copies and the CUDA-graph cache (plain Python, tested without CUDA).

- :class:`PingPong`: every state tensor has two device buffers; step k reads slot k % 2 and writes
  slot (k + 1) % 2, so the outputs of step k are the inputs of step k + 1 and an output never
  aliases the input it is computed from.
- :class:`GraphCache`: a CUDA graph fixes the addresses it captured, and they alternate with the
  ping-pong parity, so there is one graph per (parity, input shapes); the first step of a key runs
  plainly (the warm-up TensorRT asks for before a capture), the second captures, later ones launch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from vdeblur.runtime.backends.tensorrt.plan import Shape


class PingPong:
    """Which of its two buffers each state input and output binds to at each step.

    pairs: (input name, output name) per state; slots: the two buffer addresses of each state.
    At step k the inputs read slot k % 2 and the outputs write slot (k + 1) % 2, so the state
    always lives in slot ``parity`` before a step and moves to the other slot during it.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], slots: Sequence[tuple[int, int]]) -> None:
        if len(pairs) != len(slots):
            raise ValueError(f"PingPong: {len(pairs)} states but {len(slots)} buffer pairs")
        for a, b in slots:
            if a == b:
                raise ValueError(f"PingPong: both slots of a state are the buffer {a:#x}")
        self.pairs = [tuple(p) for p in pairs]
        self.slots = [tuple(s) for s in slots]
        self.step = 0

    @property
    def parity(self) -> int:
        """0 or 1: the slot the current state lives in (and the CUDA graph to use)."""
        return self.step % 2

    def bindings(self, step: int | None = None) -> dict[str, int]:
        """{tensor name: address} of every state input and output at ``step`` (default: the next)."""
        k = self.step if step is None else step
        read, write = k % 2, (k + 1) % 2
        out: dict[str, int] = {}
        for (inp, outp), pair in zip(self.pairs, self.slots, strict=True):
            out[inp] = pair[read]
            out[outp] = pair[write]
        return out

    def current(self) -> dict[str, int]:
        """{state input name: address of the buffer holding its current value}."""
        return {inp: pair[self.parity] for (inp, _), pair in zip(self.pairs, self.slots, strict=True)}

    def advance(self) -> None:
        self.step += 1

    def reset(self) -> None:
        """Back to step 0: the state lives in slot 0 (where the initial values are written)."""
        self.step = 0


class GraphKey(NamedTuple):
    parity: int
    shapes: tuple[tuple[str, Shape], ...]


class GraphCache:
    """CUDA graphs of ``execute_async_v3``, one per (ping-pong parity, input shapes).

    :meth:`action` says what the next step with a key does: ``plain`` (the warm-up launch, or
    graphs off), ``capture`` (capture, then launch the new graph) or ``launch`` (the cached
    graph). ``release`` is called on every graph dropped (invalidation, disabling, clearing).
    """

    def __init__(self, enabled: bool = True, release: Callable[[Any], None] | None = None) -> None:
        self.enabled = enabled
        self.disabled_reason: str | None = None if enabled else "turned off (cuda_graphs=False)"
        self._release = release or (lambda graph: None)
        self._graphs: dict[GraphKey, Any] = {}
        self._warm: set[GraphKey] = set()

    @staticmethod
    def key(parity: int, shapes: Mapping[str, Sequence[int]]) -> GraphKey:
        return GraphKey(int(parity), tuple((name, tuple(int(d) for d in s)) for name, s in sorted(shapes.items())))

    def action(self, key: GraphKey) -> str:
        if not self.enabled:
            return "plain"
        if key in self._graphs:
            return "launch"
        return "capture" if key in self._warm else "plain"

    def warmed(self, key: GraphKey) -> None:
        """A plain launch with ``key`` ran: the next one may capture."""
        if self.enabled:
            self._warm.add(key)

    def store(self, key: GraphKey, graph: Any) -> None:
        old = self._graphs.pop(key, None)
        if old is not None:
            self._release(old)
        self._graphs[key] = graph

    def get(self, key: GraphKey) -> Any:
        return self._graphs[key]

    def __len__(self) -> int:
        return len(self._graphs)

    def keys(self) -> list[GraphKey]:
        return list(self._graphs)

    def invalidate(self, shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        """Drop the graphs (and warm-ups) made for other shapes than ``shapes`` (all when None):
        called when the buffers they captured are freed."""
        keep = None if shapes is None else self.key(0, shapes).shapes
        for k in [k for k in self._graphs if k.shapes != keep]:
            self._release(self._graphs.pop(k))
        self._warm = {k for k in self._warm if k.shapes == keep}

    def disable(self, reason: str) -> None:
        """Capture failed: drop every graph and run plain launches from now on."""
        self.clear()
        self.enabled = False
        self.disabled_reason = reason

    def clear(self) -> None:
        for graph in self._graphs.values():
            self._release(graph)
        self._graphs.clear()
        self._warm.clear()
