#!/usr/bin/env python3
"""A stand-in for tau_exec, tau_python, nvprof and nsys (chosen by the name it is started under), for WaAP's tests.

It runs the app as a real tool would (a child process, SIGINT/SIGTERM passed on), then writes a *recorded real*
dump (dumps/, next to this script) where the real tool writes its own, and exits with the app's status.
WAAP_STANDIN=crash: abort (SIGABRT) before the app runs and write nothing; WAAP_STANDIN=big: grow the dump to
1 GiB (sparse) after writing it.
"""

import os
import shutil
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
DUMPS = os.path.join(HERE, "dumps")
MODE = os.environ.get("WAAP_STANDIN", "")
TOOL = os.path.basename(sys.argv[0])
ARGV = sys.argv[1:]


def take(name):
    """Remove ``name VALUE`` from ARGV and return VALUE (None when absent)."""
    if name not in ARGV:
        return None
    i = ARGV.index(name)
    value = ARGV[i + 1]
    del ARGV[i : i + 2]
    return value


def run(cmd):
    if MODE == "crash":
        print(f"{TOOL} (stand-in): simulated crash", file=sys.stderr, flush=True)
        os.abort()
    print(f"{TOOL} (stand-in): running {cmd}", file=sys.stderr, flush=True)
    child = subprocess.Popen(cmd)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    code = child.wait()
    return 128 - code if code < 0 else code


def dump(recorded, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(os.path.join(DUMPS, recorded), target)
    if MODE == "big":
        with open(target, "r+b") as fh:
            fh.truncate(1024**3 + os.path.getsize(target))
    print(f"{TOOL} (stand-in): wrote {target}", file=sys.stderr, flush=True)


def main():
    if TOOL == "tau_exec":
        take("-T")
        code = run(ARGV)
        dump("matmult-mpi-pthread.profile.0.0.0", os.path.join(os.environ.get("PROFILEDIR", "."), "profile.0.0.0"))
    elif TOOL == "tau_python":
        code = run([sys.executable, *ARGV])
        dump("matmult-mpi-pthread.profile.0.0.0", os.path.join(os.environ.get("PROFILEDIR", "."), "profile.0.0.0"))
    elif TOOL == "nvprof":
        log, export = take("--log-file"), take("--export-profile")
        ARGV.remove("--csv")
        code = run(ARGV)
        dump("nvprof-api-summary.csv", log)
        with open(export, "wb") as fh:
            fh.write(b"nvprof stand-in export\n")
    elif TOOL == "nsys" and ARGV[:1] == ["profile"]:
        del ARGV[0]
        output = take("--output")
        take("--force-overwrite")
        code = run(ARGV)
        with open(output + ".nsys-rep", "wb") as fh:
            fh.write(b"nsys stand-in report\n")
    elif TOOL == "nsys" and ARGV[:1] == ["stats"]:
        prefix = take("--output")
        dump("nsys-cuda_gpu_kern_sum.csv", prefix + "_cuda_gpu_kern_sum.csv")
        code = 0
    else:
        print(f"{TOOL} (stand-in): unsupported {ARGV}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
