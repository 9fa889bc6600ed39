#!/usr/bin/env python3
"""A stand-in for the Waggle object-counter plugin: counts blobs in synthetic frames, stdlib only.

It does real CPU work per frame (box blur, threshold, flood-fill labelling), so a profiler sees genuine load,
and it stops cleanly on SIGINT/SIGTERM the way WaAP stops an app at its timeout: the current frame is finished,
a summary is written and the exit status is 0.
"""

import argparse
import json
import os
import random
import signal
import sys
import threading
import time

try:
    # WaAP's in-app client: mounted at /run/waap (on PYTHONPATH) when the profile asks for the `custom` collector,
    # or installed with `pip install waap` (as `profiler.plugin`). Without a profiler every call is a no-op.
    import waap_plugin as plugin
except ImportError:  # not profiled by WaAP
    plugin = None

WIDTH = 160
HEIGHT = 120
SUMMARY_DIR = "/app/profiling_output"
SUMMARY_NAME = "objcounter-summary.json"

stop_requested = threading.Event()
stop_signal = []  # name of the first signal received


def log(message):
    print("[objcounter] " + message, flush=True)


def on_signal(signum, _frame):
    if not stop_signal:
        stop_signal.append(signal.Signals(signum).name)
    stop_requested.set()


def make_frame(seed, objects):
    """A noisy grey frame with `objects` bright rectangles at random places (some may touch and merge)."""
    rng = random.Random(seed)
    frame = [[rng.randrange(0, 90) for _ in range(WIDTH)] for _ in range(HEIGHT)]
    for _ in range(objects):
        w, h = rng.randrange(3, 10), rng.randrange(3, 10)
        x0, y0 = rng.randrange(0, WIDTH - w), rng.randrange(0, HEIGHT - h)
        level = rng.randrange(170, 256)
        for y in range(y0, y0 + h):
            row = frame[y]
            for x in range(x0, x0 + w):
                row[x] = level
    return frame


def box_blur(frame):
    """3x3 mean filter (edges use the pixels that exist)."""
    out = []
    for y in range(HEIGHT):
        ys = range(max(0, y - 1), min(HEIGHT, y + 2))
        row = []
        for x in range(WIDTH):
            xs = range(max(0, x - 1), min(WIDTH, x + 2))
            total = 0
            n = 0
            for yy in ys:
                src = frame[yy]
                for xx in xs:
                    total += src[xx]
                    n += 1
            row.append(total // n)
        out.append(row)
    return out


def count_blobs(frame, threshold=128, min_size=4):
    """Threshold the frame and count 4-connected components of at least `min_size` pixels."""
    mask = [[value >= threshold for value in row] for row in frame]
    seen = [[False] * WIDTH for _ in range(HEIGHT)]
    count = 0
    for y in range(HEIGHT):
        for x in range(WIDTH):
            if not mask[y][x] or seen[y][x]:
                continue
            size = 0
            stack = [(y, x)]
            seen[y][x] = True
            while stack:
                cy, cx = stack.pop()
                size += 1
                for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                    if 0 <= ny < HEIGHT and 0 <= nx < WIDTH and mask[ny][nx] and not seen[ny][nx]:
                        seen[ny][nx] = True
                        stack.append((ny, nx))
            if size >= min_size:
                count += 1
    return count


def process_frame(index, work):
    """One frame: generate it, then `work` blur+count passes; returns the object count of the last pass."""
    frame = make_frame(seed=index, objects=6 + index % 11)
    count = 0
    for _ in range(max(1, work)):
        frame = box_blur(frame)
        count = count_blobs(frame)
    return count


def write_summary(directory, summary):
    if not os.path.isdir(directory):
        return None
    path = os.path.join(directory, SUMMARY_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def parse_args(argv):
    p = argparse.ArgumentParser(description="Synthetic object counter (WaAP demo plugin)")
    # single-dash long options, as the real Waggle plugin spells them
    p.add_argument("-stream", default="synthetic", help="camera stream name (only 'synthetic' exists here)")
    p.add_argument("-object", default="car", help="object class to count (a label only)")
    p.add_argument("-interval", type=float, default=1.0, help="seconds between frame starts; 0 = as fast as possible")
    p.add_argument("--frames", type=int, default=0, help="frames to process, 0 = until stopped")
    p.add_argument("--work", type=int, default=1, help="CPU work per frame (number of analysis passes)")
    p.add_argument("--log-interval", type=float, default=1.0, help="at most one progress line per this many s")
    p.add_argument("--summary-dir", default=SUMMARY_DIR, help="where to write the JSON summary, if it exists")
    device = p.add_mutually_exclusive_group()
    device.add_argument("--use-cpu", action="store_true", help="run on the CPU (default)")
    device.add_argument("--use-gpu", action="store_true", help="accepted; no GPU code here, falls back to CPU")
    args = p.parse_args(argv)
    if args.interval < 0 or args.frames < 0 or args.work < 1:
        p.error("-interval and --frames must be >= 0, --work >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    device = "cpu"
    if args.use_gpu:
        log("--use-gpu: no GPU implementation in this demo, using the CPU")
    log(
        f"counting '{args.object}' on stream '{args.stream}' ({WIDTH}x{HEIGHT} frames, work {args.work}, "
        f"interval {args.interval}s, frames {args.frames or 'unlimited'})"
    )

    if plugin is not None:
        # a knob: the profile's `params: {work: N}` overrides --work while profiling
        args.work = max(1, int(plugin.param("work", args.work).get()))
        frames_metric = plugin.metric("frames")
        objects_gauge = plugin.gauge("objects")
        frame_timer = plugin.timer("frame")
    started = time.monotonic()
    started_wall = time.time()
    frames = 0
    total_objects = 0
    last_log = None
    frames_at_last_log = 0
    while not stop_requested.is_set() and (args.frames == 0 or frames < args.frames):
        frame_start = time.monotonic()
        count = process_frame(frames, args.work)
        frames += 1
        total_objects += count
        if plugin is not None:
            frames_metric.inc()
            objects_gauge.set(count)
            frame_timer.observe(time.monotonic() - frame_start)
        now = time.monotonic()
        done = args.frames and frames >= args.frames
        # -interval below --log-interval would flood the log: print at most one line per --log-interval
        if last_log is None or done or now - last_log >= args.log_interval * 0.95:
            window = now - (last_log if last_log is not None else started)
            fps = (frames - frames_at_last_log) / window if window > 0 else 0.0
            log(f"frame {frames} {args.object}={count} fps={fps:.2f} frame_ms={(now - frame_start) * 1000:.1f}")
            last_log = now
            frames_at_last_log = frames
        if done:
            break
        delay = args.interval - (time.monotonic() - frame_start)
        if delay > 0:
            stop_requested.wait(delay)  # returns early when a signal arrives

    runtime = time.monotonic() - started
    if stop_signal:
        log(f"stopping on {stop_signal[0]}")
    summary = {
        "app": "objcounter",
        "object": args.object,
        "stream": args.stream,
        "device": device,
        "work": args.work,
        "interval_s": args.interval,
        "frames": frames,
        "objects_counted": total_objects,
        "runtime_s": round(runtime, 3),
        "fps": round(frames / runtime, 3) if runtime > 0 else 0.0,
        "started_unix_s": round(started_wall, 3),
        "stopped_by": stop_signal[0] if stop_signal else "frames",
    }
    path = write_summary(args.summary_dir, summary)
    where = f", summary in {path}" if path else ""
    log(f"done: {frames} frames, {total_objects} objects, {runtime:.2f}s{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
