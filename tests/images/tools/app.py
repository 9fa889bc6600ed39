#!/usr/bin/env python3
"""The app the stand-in tools run: sleeps for argv[1] seconds (default 1); SIGINT ends it early with code 130."""

import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
print(f"app: start {sys.argv[1:]}", flush=True)
try:
    time.sleep(seconds)
except KeyboardInterrupt:
    print("app: interrupted", flush=True)
    sys.exit(130)
print("app: done", flush=True)
