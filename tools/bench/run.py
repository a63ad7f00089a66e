#!/usr/bin/env python3
"""spliced benchmark driver (standard library only).

Runs each scenario for spliced and its peers alternately, N times, and reports medians of
GB/s (wall) and CPU-seconds per GB of the system under test (utime+stime of the process and its
reaped children, from /proc). Every archived byte is verified against what was sent.

    tools/bench/run.py [--runs 5] [--scenario archive-tmpfs] [--quick] [--json out.json]
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build", "release")
SPLICED = os.path.join(BUILD, "spliced")
LOADGEN = os.path.join(BUILD, "tools", "bench", "spliced-loadgen")
TICK = os.sysconf("SC_CLK_TCK")


def build():
    subprocess.run([os.path.join(ROOT, "tools", "deps.sh")], check=True)
    lock = open("/tmp/spliced-build.lock", "w")  # one build at a time on this machine
    import fcntl
    fcntl.flock(lock, fcntl.LOCK_EX)
    subprocess.run(["cmake", "-S", ROOT, "-B", BUILD, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    "-DSPLICED_TESTS=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", BUILD, "--target", "spliced", "spliced-loadgen"],
                   check=True, stdout=subprocess.DEVNULL)


def ensure_packages(pkgs):
    missing = [p for p in pkgs if subprocess.run(["dpkg", "-s", p], stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL).returncode != 0]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def cpu_seconds(pid):
    """utime+stime of pid plus its reaped children (fields 14-17 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def tree_pids(pid):
    """pid and all its descendants (threads' children included)."""
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    out += tree_pids(int(child))
    except FileNotFoundError:
        pass
    return out


def tree_cpu(pid):
    """CPU-seconds of a process tree: each live process plus what its reaped children used."""
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += cpu_seconds(p)
        except FileNotFoundError:
            pass
    return total


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def files_under(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names if not n.startswith(".")]
    return out


def loadgen(to, clients, nbytes, seed=1):
    r = subprocess.run([LOADGEN, "send", "--to", to, "--clients", str(clients), "--bytes",
                        str(nbytes), "--seed", str(seed)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed: {r.stderr.strip()} {r.stdout.strip()}")
    return json.loads(r.stdout)


class System:
    """A system under test: one process (tree) started from a command, stopped with SIGTERM."""
    name = "?"

    def launch(self, cmd, port, **popen):
        """Starts `cmd` and waits until it listens on 127.0.0.1:`port`."""
        self.proc = subprocess.Popen(cmd, **popen)
        # Not by connecting: a probe connection to a proxy would reach the sink and be counted.
        wait_for(lambda: port_listening(int(port)), 5, f"{self.name} to listen")
        return f"127.0.0.1:{port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Spliced(System):
    name = "spliced"

    def __init__(self, workdir, layout="per_connection", pipe_size="1MiB", pipes_max=1024,
                 compress="none", name="spliced"):
        self.workdir, self.layout = workdir, layout
        self.pipe_size, self.pipes_max = pipe_size, pipes_max
        self.compress, self.name = compress, name

    def start(self, archive):
        cfg = os.path.join(self.workdir, "spliced.yaml")
        name = "{route}-{conn}-{seq}.log"
        self.port, self.admin = str(free_port()), f"127.0.0.1:{free_port()}"
        with open(cfg, "w") as f:
            f.write(f"""log: {{ level: warn }}
admin: {{ listen: {self.admin} }}
pipes: {{ size: {self.pipe_size}, max: {self.pipes_max} }}
routes:
  - name: bench
    listen: 127.0.0.1:{self.port}
    archive:
      dir: {archive}
      layout: {self.layout}
      name: "{name}"
      rotate: {{ max_bytes: 64MiB }}
      compress: {self.compress}
""")
        return self.launch([SPLICED, "-c", cfg], self.port, stderr=subprocess.PIPE)

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    key, value = line.rsplit(" ", 1)
                    out[key] = float(value)
            return out

    def done(self, archive, expected):
        # Every byte written into segments and every segment closed (renamed to its final name).
        m = self.metrics()
        return (m['spliced_archive_bytes_total{route="bench"}'] == expected
                and m['spliced_connections_active{route="bench"}'] == 0)

    def copy_bytes(self):
        return self.metrics()['spliced_copy_fallback_bytes_total{route="bench"}']



class SocatFile(System):
    """socat -u TCP-LISTEN,fork -> OPEN:file,append: one child per connection appends."""
    name = "socat"

    def __init__(self, workdir):
        self.workdir = workdir

    def start(self, archive):
        self.port = free_port()
        out = os.path.join(archive, "socat.log")
        return self.launch(
            ["socat", "-u", "-b", "262144",
             f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr,backlog=1024",
             f"OPEN:{out},creat,append"], self.port, stderr=subprocess.DEVNULL)

    def done(self, archive, expected):
        files = files_under(archive)
        if sum(os.path.getsize(f) for f in files) != expected:
            return False
        # every child has exited (and been reaped, so its CPU is counted)
        kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
        return not kids


class Sink:
    """spliced-loadgen sink: discards with splice into /dev/null and counts what arrived."""

    def __init__(self, workdir):
        self.port_file = os.path.join(workdir, f"sink-{time.monotonic_ns()}.port")
        self.proc = subprocess.Popen([LOADGEN, "sink", "--listen", self.port_file])
        wait_for(lambda: os.path.exists(self.port_file), 5, "the sink to listen")
        with open(self.port_file) as f:
            self.port = int(f.read())

    def stats(self):
        try:
            with open(self.port_file + ".stats") as f:
                return json.load(f)
        except FileNotFoundError:
            return {"connections": 0, "bytes": 0}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class SplicedProxy(Spliced):
    def __init__(self, workdir, pipe_size="1MiB", pipes_max=1024, name="spliced"):
        super().__init__(workdir, pipe_size=pipe_size, pipes_max=pipes_max, name=name)

    def start_forward(self, upstream_port):
        cfg = os.path.join(self.workdir, "spliced-proxy.yaml")
        self.port, self.admin = str(free_port()), f"127.0.0.1:{free_port()}"
        with open(cfg, "w") as f:
            f.write(f"""log: {{ level: warn }}
admin: {{ listen: {self.admin} }}
pipes: {{ size: {self.pipe_size}, max: {self.pipes_max} }}
routes:
  - name: bench
    listen: 127.0.0.1:{self.port}
    max_connections: 100000
    forward:
      upstreams: [127.0.0.1:{upstream_port}]
""")
        return self.launch([SPLICED, "-c", cfg], self.port, stderr=subprocess.PIPE)


class HAProxy(System):
    """HAProxy mode tcp, one thread (as one spliced worker), 1 MiB pipes as spliced's."""

    def __init__(self, workdir, splice=True):
        self.workdir, self.splice = workdir, splice
        self.name = "haproxy+splice" if splice else "haproxy"

    def start_forward(self, upstream_port):
        self.port = free_port()
        cfg = os.path.join(self.workdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 7000
    nbthread 1
    tune.pipesize 1048576
    log stderr format raw local0 err
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    {"option splice-auto" if self.splice else ""}
frontend f
    bind 127.0.0.1:{self.port}
    default_backend b
backend b
    server s1 127.0.0.1:{upstream_port}
""")
        return self.launch(["haproxy", "-db", "-f", cfg], self.port, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)



class NginxStream(System):
    """nginx stream proxy, one worker, 256 KiB proxy buffers."""
    name = "nginx"

    def __init__(self, workdir):
        self.workdir = workdir

    def start_forward(self, upstream_port):
        self.port = free_port()
        cfg = os.path.join(self.workdir, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid {self.workdir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 8000; }}
stream {{
    server {{
        listen 127.0.0.1:{self.port};
        proxy_pass 127.0.0.1:{upstream_port};
        proxy_buffer_size 256k;
    }}
}}
""")
        return self.launch(["nginx", "-c", cfg, "-p", self.workdir], self.port,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)



class SocatProxy(System):
    name = "socat"

    def __init__(self, workdir):
        self.workdir = workdir

    def start_forward(self, upstream_port):
        self.port = free_port()
        return self.launch(
            ["socat", "-b", "262144", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr,"
             "backlog=1024", f"TCP:127.0.0.1:{upstream_port}"], self.port,
            stderr=subprocess.DEVNULL)


def port_listening(port):
    with open("/proc/net/tcp") as f:
        return f":{port:04X} 00000000:0000 0A" in f.read()


def run_forward(system, work, clients, nbytes):
    sink = Sink(work)
    try:
        to = system.start_forward(sink.port)
        cpu0 = tree_cpu(system.proc.pid)
        t0 = time.monotonic()
        loadgen(to, clients, nbytes)
        wall = time.monotonic() - t0
        cpu = tree_cpu(system.proc.pid) - cpu0
        copied = system.copy_bytes() if hasattr(system, "copy_bytes") else None
        total = clients * nbytes
        wait_for(lambda: sink.stats()["connections"] == clients, 30, "the sink's totals")
        got = sink.stats()
        if got["bytes"] != total:
            raise RuntimeError(f"{system.name}: the sink got {got['bytes']} bytes of {total}")
        gb = total / 1e9
        return {"gbps": gb / wall, "cpu_per_gb": cpu / gb, "wall": wall, "cpu": cpu,
                "copy_fallback_bytes": copied}
    finally:
        try:
            system.stop()
        except Exception:
            pass
        sink.stop()


def scenario_forward(args, clients, nbytes, study=False):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    if args.quick:
        nbytes = max(nbytes // 20, 1_000_000)
    systems = [("spliced", lambda: SplicedProxy(work)),
               ("haproxy+splice", lambda: HAProxy(work, splice=True)),
               ("haproxy", lambda: HAProxy(work, splice=False)),
               ("nginx", lambda: NginxStream(work)),
               ("socat", lambda: SocatProxy(work))]
    if study:
        # spliced's own pipe-size study, and splice against its forced copy path.
        systems = [("spliced pipes 64KiB", lambda: SplicedProxy(work, pipe_size="64KiB")),
                   ("spliced pipes 256KiB", lambda: SplicedProxy(work, pipe_size="256KiB")),
                   ("spliced pipes 1MiB", lambda: SplicedProxy(work, pipe_size="1MiB")),
                   ("spliced copy path", lambda: SplicedProxy(work, pipes_max=0))]
    results = {name: [] for name, _ in systems}
    try:
        for i in range(-1 if args.warmup else 0, args.runs):
            for name, make in rotated(systems, i):
                r = run_forward(make(), work, clients, nbytes)
                if i < 0:
                    print(f"  warm-up {name:14s} {r['gbps']:.3f} GB/s", file=sys.stderr)
                    continue
                results[name].append(r)
                print(f"  run {i + 1} {name:14s} {r['gbps']:.3f} GB/s  "
                      f"{r['cpu_per_gb']:.3f} CPU-s/GB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"{'pipe-size study: ' if study else ''}forward {clients} x "
                        f"{nbytes // 1_000_000} MB",
            "results": {n: summarize(rs) for n, rs in results.items()}}


def run_archive(system, base_dir, clients, nbytes, verify):
    archive = tempfile.mkdtemp(prefix="archive-", dir=base_dir)
    try:
        to = system.start(archive)
        cpu0 = cpu_seconds(system.proc.pid)
        t0 = time.monotonic()
        loadgen(to, clients, nbytes)
        total = clients * nbytes
        wait_for(lambda: system.done(archive, total), 300, f"{system.name} to archive")
        wall = time.monotonic() - t0
        cpu = cpu_seconds(system.proc.pid) - cpu0
        copied = system.copy_bytes() if hasattr(system, "copy_bytes") else None
        system.stop()
        if verify:
            verify(archive, clients, nbytes)
        gb = total / 1e9
        return {"gbps": gb / wall, "cpu_per_gb": cpu / gb, "wall": wall, "cpu": cpu,
                "copy_fallback_bytes": copied}
    finally:
        try:
            system.stop()
        except Exception:
            pass
        shutil.rmtree(archive, ignore_errors=True)


def verify_per_connection(archive, clients, nbytes):
    # {conn} counts from 1 in accept order; seeds are per client: match by trying each seed.
    chains = {}
    for f in files_under(archive):
        m = re.search(r"bench-(\d+)-(\d+)\.log$", f)
        if m is None:
            raise RuntimeError(f"unexpected file in the archive: {f}")
        chains.setdefault(int(m.group(1)), []).append((int(m.group(2)), f))
    if len(chains) != clients:
        raise RuntimeError(f"expected {clients} chains, found {len(chains)}")
    seeds = set(range(1, clients + 1))
    for conn, segs in chains.items():
        files = [f for _, f in sorted(segs)]
        with open(files[0], "rb") as fh:
            seed = int.from_bytes(fh.read(8), "little")
        if seed not in seeds:
            raise RuntimeError(f"chain {conn} has unknown seed {seed}")
        seeds.discard(seed)
        r = subprocess.run([LOADGEN, "verify", "--bytes", str(nbytes), "--seed", str(seed), *files],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"verification failed: {r.stderr.strip()}")


def scenario_archive(args, where, clients=4, nbytes=500_000_000):
    base = "/dev/shm" if where == "tmpfs" else os.path.join(ROOT, "build")
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir=base)
    if args.quick:
        clients, nbytes = min(clients, 4), max(nbytes // 10, 1_000_000)
    systems = [("spliced", lambda: Spliced(work), verify_per_connection),
               ("socat", lambda: SocatFile(work), None)]
    if args.compress:
        # The compressed segments are not verified here (the plain runs are): the figure is the
        # cost of the background compressor to the splice path.
        systems.append(("spliced+zstd", lambda: Spliced(work, compress="zstd"), None))
    results = {name: [] for name, _, _ in systems}
    try:
        # One discarded round first: the first run of each system pays for fresh tmpfs/page
        # cache memory and cold caches, which says nothing about the system under test.
        for i in range(-1 if args.warmup else 0, args.runs):
            for name, make, verify in rotated(systems, i):
                r = run_archive(make(), work, clients, nbytes, verify)
                if i < 0:
                    print(f"  warm-up {name:8s} {r['gbps']:.3f} GB/s", file=sys.stderr)
                    continue
                results[name].append(r)
                print(f"  run {i + 1} {name:8s} {r['gbps']:.3f} GB/s  "
                      f"{r['cpu_per_gb']:.3f} CPU-s/GB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"archive {clients} x {nbytes // 1_000_000} MB into {where}",
            "results": {n: summarize(rs) for n, rs in results.items()}}


def rotated(systems, i):
    """Round i starts with a different system, so none always pays for going first."""
    k = i % len(systems)
    return systems[k:] + systems[:k]


def prefault_memory(gigabytes):
    """Writes and deletes `gigabytes` in tmpfs once: on a virtual machine the first touch of guest
    memory is slow, and without this the first system to archive pays for it."""
    path = os.path.join("/dev/shm", f"spliced-bench-prefault-{os.getpid()}")
    block = b"\0" * (1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range(int(gigabytes * 1024)):
                f.write(block)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def summarize(rs):
    copied = [r["copy_fallback_bytes"] for r in rs if r.get("copy_fallback_bytes") is not None]
    return {"gbps": statistics.median(r["gbps"] for r in rs),
            "cpu_per_gb": statistics.median(r["cpu_per_gb"] for r in rs),
            "copy_fallback_bytes": max(copied) if copied else None,
            "runs": len(rs), "all": rs}


def socat_version():
    out = subprocess.run(["socat", "-V"], capture_output=True, text=True).stdout
    return next((l.strip() for l in out.splitlines() if "socat version" in l), "socat ?")


def versions():
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    return {
        "spliced": first_line([SPLICED, "--version"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "socat": socat_version(),
        "kernel": os.uname().release,
        "cpus": str(os.cpu_count()),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), "?"),
    }


def write_markdown(path, out, args):
    v = versions()
    lines = ["# Benchmarks", "",
             f"Generated by `tools/bench/run.py --runs {args.runs}` on "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}: {v['cpus']} x {v['cpu']}, "
             f"Linux {v['kernel']}. {v['spliced']}; {v['haproxy']}; {v['nginx']}; "
             f"{v['socat']}.", "",
             "Each figure is the median of the runs, the systems alternating run by run (each "
             "round starting with a different one) after one discarded warm-up round and 8 GB "
             "of memory touched once beforehand, on one machine, so ratios within a table are what to "
             "read. spliced rotates archive segments at 64 MiB, so with `compress: zstd` the "
             "background compressor runs during the transfer. GB/s is wall-clock (first connect to the last byte delivered); CPU-s per GB "
             "is the user+system time of the system under test (its whole process tree) per "
             "10^9 bytes. The load generator and the sink run on the same 2 cores.", ""]
    for sc in out:
        lines += [f"## {sc['scenario']}", "",
                  "| system | GB/s | CPU-s per GB | GB per CPU-s | copy-fallback bytes |",
                  "|---|---|---|---|---|"]
        for name, r in sc["results"].items():
            per = 1 / r["cpu_per_gb"] if r["cpu_per_gb"] > 0 else float("inf")
            copied = "-" if r.get("copy_fallback_bytes") is None else f"{r['copy_fallback_bytes']:.0f}"
            lines.append(f"| {name} | {r['gbps']:.3f} | {r['cpu_per_gb']:.3f} | {per:.2f} | {copied} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot(png, out):
    """A bar chart of GB/s per system and scenario (gnuplot)."""
    if shutil.which("gnuplot") is None:
        ensure_packages(["gnuplot-nox"])
    data = png + ".dat"
    systems = []
    for sc in out:
        for name in sc["results"]:
            if name not in systems:
                systems.append(name)
    with open(data, "w") as f:
        f.write("scenario " + " ".join(f'"{s}"' for s in systems) + "\n")
        for sc in out:
            row = [f'"{sc["scenario"]}"']
            for name in systems:
                r = sc["results"].get(name)
                row.append(f"{r['gbps']:.3f}" if r else "-")
            f.write(" ".join(row) + "\n")
    script = f"""set terminal pngcairo size 1100,520 font ",10"
set output "{png}"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel "GB/s (median)"
set key outside right
set datafile missing "-"
set xtics rotate by -15
set grid ytics
plot for [i=2:{len(systems) + 1}] "{data}" using i:xtic(1) title columnheader(i)
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.unlink(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 run (CI smoke test)")
    ap.add_argument("--scenario", action="append",
                    choices=["archive-tmpfs", "archive-disk", "archive-1000x1", "forward-4x500",
                             "forward-100x20", "study"])
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--markdown", help="write the tables here (and a PNG chart beside it)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the discarded first round")
    ap.add_argument("--compress", action="store_true",
                    help="also run spliced with compress: zstd in the archive scenarios")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.warmup = 1, False
    ensure_packages(["socat", "haproxy", "nginx-light", "libnginx-mod-stream"])
    build()
    if not args.quick:
        prefault_memory(8)
    out = []
    for sc in args.scenario or ["archive-tmpfs", "archive-disk", "archive-1000x1",
                                "forward-4x500", "forward-100x20", "study"]:
        print(f"scenario {sc}", file=sys.stderr)
        if sc == "archive-1000x1":
            out.append(scenario_archive(args, "tmpfs", 1000, 1_000_000))
        elif sc == "study":
            out.append(scenario_forward(args, 4, 500_000_000, study=True))
        elif sc.startswith("archive-"):
            out.append(scenario_archive(args, sc.split("-")[1]))
        else:
            clients, mb = sc.split("-")[1].split("x")
            out.append(scenario_forward(args, int(clients), int(mb) * 1_000_000))
    for sc in out:
        print(f"\n{sc['scenario']} (median of {args.runs})")
        print("| system | GB/s | CPU-s per GB |\n|---|---|---|")
        for name, r in sc["results"].items():
            print(f"| {name} | {r['gbps']:.3f} | {r['cpu_per_gb']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.markdown:
        write_markdown(args.markdown, out, args)
        plot(os.path.splitext(args.markdown)[0] + ".png", out)


if __name__ == "__main__":
    main()
