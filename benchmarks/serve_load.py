"""Load and soak benchmark of `vdeblur serve` on loopback, driven by the real tritonclient.

    python benchmarks/serve_load.py [--model mtu2] [--size 128x72] [--sequences 16] [--frames 300]
                                    [--check 4] [--soak-frames 10000] [--soak-size 64x48] [--timeout 3]
                                    [--out benchmarks/results/serve_load_cpu.json]

The server runs as its own process (`vdeblur serve ... --json`) on an artifact exported with random
weights; the clients run in this process, one tritonclient gRPC client and stream per sequence.

1. load: ``--sequences`` concurrent sequences x ``--frames`` frames over gRPC streaming, each client
   keeping at most lookahead + 2 frames in flight. Checked: every sequence gets frame indices 0..n-1
   exactly once, in order (lost, duplicated and reordered frames are counted), and for ``--check``
   of the sequences every 10th output is compared with an in-process
   :class:`vdeblur.runtime.stream.Stream` on the same frames (max difference in 8-bit levels, PSNR).
   Recorded: throughput, per-frame latency (send of frame k to the arrival of output k, which
   includes the lookahead) p50/p90/p99, mean batch size (from the server's metrics).
2. overhead: one sequence, one frame per request, answered before the next is sent: gRPC unary,
   HTTP, and an in-process Stream.push, interleaved in blocks, on the idle server.
3. soak: ``--soak-frames`` frames in all over ``--sequences`` clients that start and end sequences
   of 125 frames again and again; the server's resident memory sampled every second (growth from
   after a warm-up at that size to the end).
4. killed client: a client process opens a sequence, sends frames and is SIGKILLed; the time until
   the server has freed its state (``vdeblur_active_sequences`` back down, ``expired`` up) with
   ``--sequence-timeout``.
Then SIGTERM: the server's exit status and time to drain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from vdeblur.bench import machine
from vdeblur.data.texture import moving_texture
from vdeblur.export.artifact import export_artifact
from vdeblur.metrics import psnr
from vdeblur.runtime.stream import Stream

MODEL = "m"


def clip_uint8(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 frames: a 40-frame moving texture, played forward and back."""
    base = (moving_texture(40, h, w, seed=seed).transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)
    order = [i if (i // 40) % 2 == 0 else 39 - i % 40 for i in range(n)]
    return np.ascontiguousarray(base[[o % 40 for o in order]])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def pct(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1e3
    return {k: round(float(np.percentile(ms, q)), 2) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))} | {
        "max": round(float(ms.max()), 2), "mean": round(float(ms.mean()), 2)}


class Sequence:
    """One client, one stream, sequences sent with a bounded number of frames in flight."""

    def __init__(self, port: int, lookahead: int) -> None:
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.window = lookahead + 2
        self.cv = threading.Condition()
        self.arrived: list[tuple[int, float, np.ndarray | None]] = []
        self.errors: list[str] = []
        self.keep_every = 0
        self.client.start_stream(callback=self._callback)

    def _callback(self, result: Any, error: Any) -> None:
        now = time.perf_counter()
        with self.cv:
            if error is not None:
                self.errors.append(str(error))
            else:
                index = result.get_response().parameters["frame_index"].int64_param
                keep = self.keep_every and index % self.keep_every == 0
                self.arrived.append((index, now, result.as_numpy("FRAME_OUT")[0].copy() if keep else None))
            self.cv.notify_all()

    def run(self, sid: int, frames: np.ndarray) -> list[float]:
        """Send one sequence; returns the send times."""
        sent: list[float] = []
        first = len(self.arrived)
        for k, f in enumerate(frames):
            with self.cv:
                self.cv.wait_for(lambda k=k: k - (len(self.arrived) - first) < self.window or self.errors)
            x = f[None]
            inp = grpcclient.InferInput("FRAME", list(x.shape), "UINT8")
            inp.set_data_from_numpy(x)
            sent.append(time.perf_counter())
            self.client.async_stream_infer(MODEL, [inp], sequence_id=sid, sequence_start=k == 0,
                                           sequence_end=k == len(frames) - 1)
        with self.cv:
            self.cv.wait_for(lambda: len(self.arrived) - first >= len(frames) or self.errors, timeout=600)
        return sent

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def load_phase(port: int, artifact: Path, lookahead: int, n_seq: int, n_frames: int, h: int, w: int,
               check: int) -> dict:
    clients = [Sequence(port, lookahead) for _ in range(n_seq)]
    for c in clients:
        c.keep_every = 10
    videos = [clip_uint8(n_frames, h, w, seed=100 + i) for i in range(n_seq)]
    sends: list[list[float]] = [[] for _ in range(n_seq)]
    threads = [threading.Thread(target=lambda i=i: sends.__setitem__(i, clients[i].run(1000 + i, videos[i])))
               for i in range(n_seq)]
    m0 = scrape(HTTP_PORT)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    m1 = scrape(HTTP_PORT)
    lost = dup = reordered = 0
    latencies: list[float] = []
    worst_levels, worst_psnr, checked = 0, float("inf"), 0
    for i, c in enumerate(clients):
        indices = [a[0] for a in c.arrived]
        lost += len(set(range(n_frames)) - set(indices))
        dup += len(indices) - len(set(indices))
        reordered += sum(1 for a, b in zip(indices, indices[1:], strict=False) if b != a + 1)
        times = {a[0]: a[1] for a in c.arrived}
        latencies += [times[k] - sends[i][k] for k in range(n_frames) if k in times]
        kept = {a[0]: a[2] for a in c.arrived if a[2] is not None}
        c.close()
        if i >= check:
            continue
        with Stream(artifact) as s:  # the in-process reference on the same frames
            ref = [o for f in videos[i] for o in s.push(f)] + s.flush()
        for k, out in kept.items():
            diff = int(np.abs(out.astype(np.int16) - ref[k][1].astype(np.int16)).max())
            worst_levels = max(worst_levels, diff)
            worst_psnr = min(worst_psnr, psnr(out.astype(np.float32) / 255, ref[k][1].astype(np.float32) / 255))
            checked += 1
    label = f'{{model="{MODEL}",version="1"}}'
    execs = m1[f"nv_inference_exec_count{label}"] - m0[f"nv_inference_exec_count{label}"]
    count = m1[f"nv_inference_count{label}"] - m0[f"nv_inference_count{label}"]
    req_us = m1[f"nv_inference_request_duration_us{label}"] - m0[f"nv_inference_request_duration_us{label}"]
    return {"sequences": n_seq, "frames_per_sequence": n_frames, "size": f"{w}x{h}", "seconds": round(seconds, 2),
            "throughput_fps": round(n_seq * n_frames / seconds, 2), "lost": lost, "duplicated": dup,
            "reordered": reordered, "errors": sum(len(c.errors) for c in clients),
            "frame_latency_ms": pct(latencies),
            "server_request_ms_mean": round(req_us / 1e3 / max(count, 1), 2),
            "mean_batch": round(count / max(execs, 1), 2),
            "checked_sequences": min(check, n_seq), "checked_outputs": checked,
            "max_diff_levels_vs_stream": worst_levels, "min_psnr_vs_stream_db": round(worst_psnr, 2)}


def overhead_phase(grpc_port: int, artifact: Path, h: int, w: int, blocks: int = 12, per_block: int = 10) -> dict:
    frames = clip_uint8(blocks * per_block, h, w, seed=7)
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    hc = httpclient.InferenceServerClient(f"127.0.0.1:{HTTP_PORT}")
    times: dict[str, list[float]] = {"stream_in_process": [], "grpc_unary": [], "http": []}
    with Stream(artifact) as s:
        k = {"grpc_unary": 0, "http": 0, "stream_in_process": 0}
        for b in range(blocks):
            order = list(times)[b % 3:] + list(times)[:b % 3]  # rotate who goes first
            for name in order:
                for _ in range(per_block):
                    i = k[name]
                    x = frames[i][None]
                    t0 = time.perf_counter()
                    if name == "stream_in_process":
                        s.push(frames[i])
                    elif name == "grpc_unary":
                        inp = grpcclient.InferInput("FRAME", list(x.shape), "UINT8")
                        inp.set_data_from_numpy(x)
                        g.infer(MODEL, [inp], sequence_id=77, sequence_start=i == 0)
                    else:
                        inp = httpclient.InferInput("FRAME", list(x.shape), "UINT8")
                        inp.set_data_from_numpy(x)
                        hc.infer(MODEL, [inp], sequence_id=78, sequence_start=i == 0)
                    times[name].append(time.perf_counter() - t0)
                    k[name] += 1
    g.infer(MODEL, [inp_of(frames[-1])], sequence_id=77, sequence_end=True)
    g.close()
    hc.close()
    med = {n: statistics.median(v) * 1e3 for n, v in times.items()}
    return {"size": f"{w}x{h}", "frames_each": blocks * per_block,
            "median_ms": {n: round(v, 3) for n, v in med.items()},
            "grpc_overhead_ms": round(med["grpc_unary"] - med["stream_in_process"], 3),
            "http_overhead_ms": round(med["http"] - med["stream_in_process"], 3),
            "grpc_ratio": round(med["grpc_unary"] / med["stream_in_process"], 3),
            "http_ratio": round(med["http"] / med["stream_in_process"], 3)}


def inp_of(frame: np.ndarray) -> Any:
    x = frame[None]
    inp = grpcclient.InferInput("FRAME", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    return inp


def soak_phase(grpc_port: int, pid: int, lookahead: int, n_seq: int, total: int, h: int, w: int,
               seq_len: int = 125) -> dict:
    video = clip_uint8(seq_len, h, w, seed=11)
    clients = [Sequence(grpc_port, lookahead) for _ in range(n_seq)]
    warm = [threading.Thread(target=c.run, args=(5000 + i, video[:20])) for i, c in enumerate(clients)]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    time.sleep(1.0)
    rss0 = rss_mb(pid)
    samples: list[tuple[float, float]] = []
    per_client = total // n_seq
    done = threading.Event()

    def sampler() -> None:
        t0 = time.perf_counter()
        while not done.wait(1.0):
            samples.append((round(time.perf_counter() - t0, 1), round(rss_mb(pid), 1)))

    def work(i: int) -> None:
        sent, sid = 0, 10_000 + i * 1000
        while sent < per_client:
            n = min(seq_len, per_client - sent)
            clients[i].run(sid, video[:n])
            sent += n
            sid += 1

    s = threading.Thread(target=sampler)
    s.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_seq)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    done.set()
    s.join()
    time.sleep(1.0)
    rss1 = rss_mb(pid)
    arrived = sum(len(c.arrived) for c in clients) - n_seq * 20
    errors = sum(len(c.errors) for c in clients)
    for c in clients:
        c.close()
    return {"frames": per_client * n_seq, "frames_answered": arrived, "errors": errors, "size": f"{w}x{h}",
            "sequence_length": seq_len, "seconds": round(seconds, 1),
            "rss_mb_after_warmup": round(rss0, 1), "rss_mb_end": round(rss1, 1),
            "rss_growth_mb": round(rss1 - rss0, 1), "rss_samples": samples[:: max(1, len(samples) // 40)]}


KILLED_CLIENT = r"""
import sys, time, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(sys.argv[1]); c.start_stream(callback=lambda result, error: None)
for k in range(5):
    x = np.zeros((1, 64, 64, 3), np.uint8); i = g.InferInput("FRAME", [1, 64, 64, 3], "UINT8"); i.set_data_from_numpy(x)
    c.async_stream_infer(sys.argv[2], [i], sequence_id=424242, sequence_start=k == 0)
print("sent", flush=True); time.sleep(60)
"""


def killed_client_phase(grpc_port: int, timeout: float) -> dict:
    label = f'{{model="{MODEL}",version="1"}}'
    m0 = scrape(HTTP_PORT)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, f"127.0.0.1:{grpc_port}", MODEL],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    deadline = time.monotonic() + 30
    while scrape(HTTP_PORT)[f"vdeblur_active_sequences{label}"] <= m0[f"vdeblur_active_sequences{label}"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the killed client's sequence never opened")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.perf_counter()
    while True:
        m = scrape(HTTP_PORT)
        if m[f"vdeblur_active_sequences{label}"] <= m0[f"vdeblur_active_sequences{label}"]:
            break
        if time.perf_counter() - killed > timeout + 30:
            return {"freed": False, "sequence_timeout_s": timeout}
        time.sleep(0.05)
    return {"freed": True, "sequence_timeout_s": timeout, "freed_after_s": round(time.perf_counter() - killed, 2),
            "expired_counted": m[f"vdeblur_sequences_expired_total{label}"]
            - m0[f"vdeblur_sequences_expired_total{label}"]}


HTTP_PORT = 0


def main() -> None:
    global HTTP_PORT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtu2")
    p.add_argument("--size", default="128x72", help="WxH of the load phase")
    p.add_argument("--check", type=int, default=4, help="sequences whose outputs are compared with a Stream")
    p.add_argument("--sequences", type=int, default=16)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--soak-frames", type=int, default=10_000)
    p.add_argument("--soak-size", default="64x48")
    p.add_argument("--timeout", type=float, default=3.0, help="the server's --sequence-timeout")
    p.add_argument("--out", default="benchmarks/results/serve_load_cpu.json")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    sw, sh = (int(v) for v in args.soak_size.split("x"))
    result: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / MODEL
        export_artifact(args.model, artifact, height=64, width=64, frames=3)
        proc = subprocess.Popen([sys.executable, "-m", "vdeblur", "serve", str(artifact), "--http-port", "0",
                                 "--grpc-port", "0", "--json", "--sequence-timeout", str(args.timeout),
                                 "--max-sequences", str(args.sequences * 2)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            info = json.loads(proc.stdout.readline())
            HTTP_PORT, grpc_port = info["http_port"], info["grpc_port"]
            lookahead = info["models"][0]["lookahead"]
            result["server"] = info
            result["rss_mb_at_start"] = round(rss_mb(proc.pid), 1)
            print("load ...", flush=True)
            result["load"] = load_phase(grpc_port, artifact, lookahead, args.sequences, args.frames, h, w,
                                        args.check)
            print(json.dumps(result["load"]), flush=True)
            print("overhead ...", flush=True)
            result["overhead"] = overhead_phase(grpc_port, artifact, h, w)
            print(json.dumps(result["overhead"]), flush=True)
            print("soak ...", flush=True)
            result["soak"] = soak_phase(grpc_port, proc.pid, lookahead, args.sequences, args.soak_frames, sh, sw)
            print(json.dumps({k: v for k, v in result["soak"].items() if k != "rss_samples"}), flush=True)
            print("killed client ...", flush=True)
            result["killed_client"] = killed_client_phase(grpc_port, args.timeout)
            print(json.dumps(result["killed_client"]), flush=True)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            result["sigterm"] = {"exit_code": proc.wait(timeout=60), "seconds": round(time.perf_counter() - t0, 2)}
        finally:
            if proc.poll() is None:
                proc.kill()
    result["machine"]["load_average_after"] = machine()["load_average"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
