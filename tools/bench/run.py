#!/usr/bin/env python3
"""spliced benchmark driver (standard library only).

Runs each scenario for spliced and its peers alternately, N times, and reports medians of
GB/s (wall) and CPU-seconds per GB of the system under test (utime+stime of the process and its
reaped children, from /proc). Every archived byte is verified against what was sent. With
--baseline DIR every spliced system also runs with DIR/spliced, alternating with the others, and
the end shows new/baseline ratios; --only-spliced leaves the peers out. Two scenarios measure
what is not a rate of bytes: `syscalls` counts the system calls of a short proxied connection
(strace -c), `latency` ping-pongs 64 B and 16 KiB over 1 and 16 connections to an echo upstream
(round trips per second, p50/p99/p99.9 and the proxy's CPU per round trip, against no proxy).
`cat` reads a 1 GiB segment with `spliced cat` against cat (plain) and zstdcat (.zst), into a
pipe and into /dev/null, and the peak RSS of reading a 4 GiB sparse segment.
`udp` sends 1,000,000 syslog datagrams of 200 B from one sender as fast as it goes to spliced
(a udp: route, shared chain, one line per datagram; 1 and 2 workers) and to rsyslog (imudp to
omfile): messages archived per second, CPU per message, and the loss (what never reached the
archive; every archived line is checked whole and unique).
`octet-4x500` sends 4 x 500 MB of syslog messages of 500 B and of 16 KiB, octet counted (RFC 6587),
to spliced (framing: octet_counted, output: lines; one shared chain, and a chain per connection)
and to rsyslog (imtcp -> omfile): messages/s, GB/s, CPU-s per GB and CPU per message, and the
bytes spliced's framing copied and spliced.
`ship-4x500` sends 4 x 500 MB of lines into a shipping route (archive and forward, one shared
chain in tmpfs) whose upstream is a sink on 127.0.0.1, until the sink has every byte and
spliced_ship_lag_bytes is 0, against the same archive alone, a proxy route to the same sink, and
rsyslog's omfwd on a disk-assisted queue (GB/s, CPU-s per GB of the system under test; the sink's
and the load generator's CPU are not in it).

    tools/bench/run.py [--runs 5] [--scenario archive-tmpfs] [--quick] [--json out.json]
                       [--manifest] (the cost of archive.manifest.hash: none, xxh3, sha256)
                       [--baseline DIR] [--only-spliced]
"""
import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
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
LINE = 500  # bytes per line of the archive scenarios' text streams (a typical JSON log line)


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
        print(f"installing: {' '.join(missing)}", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        *missing], check=True, env=env)


def tool(name):
    """A peer's program: daemons live in /usr/sbin, which a user's PATH may not have."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


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


class CpuBudget:
    """Where the CPU went during a timed run: the system under test, the load generator (the
    children run.py waited for meanwhile), the sink, and the whole machine (/proc/stat: every
    core's busy time, and the softirq part of it, which is the network stack's receive work
    wherever it ran). Each in cores: CPU-seconds over the wall-clock time."""

    def __init__(self, sut_pid, sink=None):
        self.sut_pid, self.sink = sut_pid, sink
        self.sut0 = tree_cpu(sut_pid)
        self.sink0 = tree_cpu(sink.proc.pid) if sink else 0.0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.kids0 = ru.ru_utime + ru.ru_stime
        self.stat0 = self.machine()
        self.t0 = time.monotonic()

    @staticmethod
    def machine():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle, iowait
        return (sum(v[:8]) - idle) / TICK, v[6] / TICK  # busy (no guest), softirq

    def end(self, sut_cpu=None):
        wall = time.monotonic() - self.t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, soft = self.machine()
        sut = sut_cpu if sut_cpu is not None else tree_cpu(self.sut_pid) - self.sut0
        sink = (tree_cpu(self.sink.proc.pid) - self.sink0) if self.sink else 0.0
        return {"sut_cores": sut / wall,
                "loadgen_cores": (ru.ru_utime + ru.ru_stime - self.kids0) / wall,
                "sink_cores": sink / wall,
                "busy_cores": (busy - self.stat0[0]) / wall,
                "softirq_cores": (soft - self.stat0[1]) / wall}


def free_ports(n):
    """n distinct free ports (all bound at once while choosing, so none repeats)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def free_port():
    return free_ports(1)[0]


def wait_for(pred, timeout, what, interval=0.005):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def files_under(d):
    """The segment files below d: dot names (spliced's .spliced.lock and .spliced/) left out."""
    out = []
    for root, dirs, names in os.walk(d):
        dirs[:] = [n for n in dirs if not n.startswith(".")]
        out += [os.path.join(root, n) for n in names if not n.startswith(".")]
    return out


def loadgen(to, clients, nbytes, seed=1, lines=0, octet=False):
    r = subprocess.run([LOADGEN, "send", "--to", to, "--clients", str(clients), "--bytes",
                        str(nbytes), "--seed", str(seed), "--lines", str(lines),
                        *(["--octet"] if octet else [])],
                       capture_output=True, text=True, timeout=600)
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
        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start: "
                                   f"{self.log_tail()}")
            return port_listening(int(port))
        wait_for(listening, 5, f"{self.name} to listen")
        return f"127.0.0.1:{port}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.name} did not stop within 30 s of SIGTERM") from None

    def settle(self):
        """Waits for work the system still does after the last byte arrived (children exiting,
        background compression), so that its CPU time is all counted."""

    log_file = None  # where the system's own messages go, shown when a run fails

    def log_tail(self):
        try:
            with open(os.path.join(self.workdir, self.log_file)) as f:
                return "".join(f.readlines()[-5:]).strip()
        except (TypeError, OSError):
            return ""

    def send(self, to, clients, nbytes, lines=0, octet=False):
        try:
            return loadgen(to, clients, nbytes, lines=lines, octet=octet)
        except RuntimeError as e:
            raise RuntimeError(f"{self.name}: {e}; its log: {self.log_tail()}") from None


class Spliced(System):
    name = "spliced"

    def __init__(self, workdir, layout="per_connection", pipe_size="1MiB", pipes_max=1024,
                 compress="none", name="spliced", binary=None, workers=1, manifest_hash=None):
        self.workdir, self.layout, self.workers = workdir, layout, workers
        self.pipe_size, self.pipes_max = pipe_size, pipes_max
        self.compress, self.name = compress, name
        # None: the config has no manifest key (the default hash); else archive.manifest.hash,
        # and a run ends only once every segment has its manifest line (the hash is in the time).
        self.manifest_hash = manifest_hash
        self.binary = binary  # the spliced to run; None: the build's (SPLICED)

    def program(self):
        return self.binary or SPLICED

    def start(self, archive):
        cfg = os.path.join(self.workdir, "spliced.yaml")
        name = "{route}-{conn}-{seq}.log"
        layout = f"layout: {self.layout}"
        if self.layout == "lines":  # one chain for all connections, whole lines, as rsyslog
            name, layout = "{route}-{seq}.log", "layout: shared\n      framing: lines"
        port, admin = free_ports(2)
        self.port, self.admin = str(port), f"127.0.0.1:{admin}"
        self.archive = archive
        with open(cfg, "w") as f:
            f.write(f"""log: {{ level: warn }}
admin: {{ listen: {self.admin} }}
pipes: {{ size: {self.pipe_size}, max: {self.pipes_max} }}
workers: {self.workers}
routes:
  - name: bench
    listen: 127.0.0.1:{self.port}
    archive:
      dir: {archive}
      {layout}
      name: "{name}"
      rotate: {{ max_bytes: 64MiB }}
      compress: {self.compress}
""")
            if self.manifest_hash:
                f.write(f"      manifest: {{ hash: {self.manifest_hash} }}\n")
        return self.launch([self.program(), "-c", cfg], self.port, stderr=self.log())

    log_file = "spliced.log"

    def log(self):
        """spliced's own log (warnings and errors only), kept in the work dir."""
        return open(os.path.join(self.workdir, "spliced.log"), "a")

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    key, value = line.rsplit(" ", 1)
                    out[key] = float(value)
            return out

    def done(self, archive, expected):
        if self.manifest_hash:  # every segment closed, hashed and recorded
            m = self.metrics()
            return (m['spliced_archive_bytes_total{route="bench"}'] == expected
                    and m['spliced_connections_active{route="bench"}'] == 0
                    and m['spliced_archive_manifest_records_total{route="bench"}']
                    == m['spliced_archive_segments_total{route="bench"}'])
        if self.compress != "none":  # segments turn into smaller .zst files: ask spliced
            m = self.metrics()
            return (m['spliced_archive_bytes_total{route="bench"}'] == expected
                    and m['spliced_connections_active{route="bench"}'] == 0)
        # Every byte in segment files, and (per connection) every segment closed, renamed to its
        # final name; a shared chain's segment stays open for the next clients.
        files = files_under(archive)
        return ((self.layout != "per_connection" or not any(f.endswith(".open") for f in files))
                and sum(os.path.getsize(f) for f in files) == expected)

    def done_interval(self):
        # Scraping costs spliced CPU.
        return 0.02 if self.compress != "none" or self.manifest_hash else 0.005

    def settle(self):
        if self.compress != "none":  # the background compressor has finished every segment
            wait_for(lambda: all(f.endswith(".zst") for f in files_under(self.archive)), 300,
                     "spliced to compress every segment", interval=0.05)

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
        return not children(self.proc.pid)


class RSyslog(System):
    """rsyslogd: imtcp -> omfile with a raw template (the message as received, and its '\\n'),
    DNS lookups of peers off, a 100,000-message main queue dequeued 1,024 at a time by one
    worker (so each client's lines stay in order), 256 KiB file buffer. maxSessions 20000:
    rsyslog 8.2302 sizes its listen backlog at a tenth of it, and with the default (200 -> 20)
    a thousand clients connecting at once get resets."""
    name = "rsyslog"
    log_file = "rsyslog.err"

    def __init__(self, workdir):
        self.workdir = workdir

    def start(self, archive):
        self.port = free_port()
        self.out = os.path.join(archive, "rsyslog.log")
        cfg = os.path.join(self.workdir, "rsyslog.conf")
        with open(cfg, "w") as f:
            f.write(f"""global(workDirectory="{self.workdir}" net.enableDNS="off" maxMessageSize="64k")
main_queue(queue.type="FixedArray" queue.size="100000" queue.dequeueBatchSize="1024"
           queue.workerThreads="1")
module(load="imtcp" maxSessions="20000")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="bench") {{
  action(type="omfile" file="{self.out}" template="raw" ioBufferSize="256k")
}}
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="bench")
""")
        self.errors = open(os.path.join(self.workdir, self.log_file), "w")
        return self.launch([tool("rsyslogd"), "-n", "-f", cfg, "-i", os.path.join(self.workdir,
                            "rsyslogd.pid")], self.port, stderr=self.errors)

    def done(self, archive, expected):
        return os.path.exists(self.out) and os.path.getsize(self.out) == expected


def udp_listening(port):
    """True once something has a UDP socket bound to `port` (/proc/net/udp, udp6)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    local = line.split()[1]
                    if int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            pass
    return False


class UdpSystem(System):
    """A UDP receiver: started like the others, but ready once its UDP port is bound."""

    def launch(self, cmd, port, **popen):
        self.proc = subprocess.Popen(cmd, **popen)

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start: "
                                   f"{self.log_tail()}")
            return udp_listening(int(port))
        wait_for(listening, 5, f"{self.name} to bind its UDP port")
        return f"127.0.0.1:{port}"


class SplicedUdp(UdpSystem):
    """spliced with a udp: route: one shared chain, a line per datagram (the defaults)."""
    name = "spliced"
    log_file = "spliced.log"

    def __init__(self, workdir, workers=1, name="spliced", binary=None, rcvbuf="4MiB"):
        self.workdir, self.workers, self.name, self.binary = workdir, workers, name, binary
        self.rcvbuf = rcvbuf

    def start(self, archive):
        cfg = os.path.join(self.workdir, "spliced.yaml")
        port, admin = free_ports(2)
        self.port, self.admin = str(port), f"127.0.0.1:{admin}"
        with open(cfg, "w") as f:
            f.write(f"""log: {{ level: warn }}
admin: {{ listen: {self.admin} }}
workers: {self.workers}
routes:
  - name: bench
    listen: udp:127.0.0.1:{self.port}
    udp_rcvbuf: {self.rcvbuf}
    archive:
      dir: {archive}
      name: "{{route}}-{{seq}}.log"
      rotate: {{ max_bytes: 64MiB }}
""")
        log = open(os.path.join(self.workdir, self.log_file), "a")
        return self.launch([self.binary or SPLICED, "-c", cfg], self.port, stderr=log)

    def kernel_drops(self):
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('spliced_udp_dropped_total{route="bench"}'):
                    return float(line.rsplit(" ", 1)[1])
        return None


class RSyslogUdp(UdpSystem):
    """rsyslogd: imudp -> omfile with the raw template (the message and '\\n'), the same main
    queue as the TCP scenario, a 4 MiB receive buffer (rcvbufSize, as spliced's udp_rcvbuf)."""
    name = "rsyslog"
    log_file = "rsyslog.err"

    def __init__(self, workdir, rcvbuf="4m"):
        self.workdir, self.rcvbuf = workdir, rcvbuf

    def start(self, archive):
        self.port = free_port()
        self.out = os.path.join(archive, "rsyslog.log")
        cfg = os.path.join(self.workdir, "rsyslog.conf")
        with open(cfg, "w") as f:
            f.write(f"""global(workDirectory="{self.workdir}" net.enableDNS="off" maxMessageSize="64k")
main_queue(queue.type="FixedArray" queue.size="100000" queue.dequeueBatchSize="1024"
           queue.workerThreads="1")
module(load="imudp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="bench") {{
  action(type="omfile" file="{self.out}" template="raw" ioBufferSize="256k")
}}
input(type="imudp" port="{self.port}" address="127.0.0.1" ruleset="bench" rcvbufSize="{self.rcvbuf}")
""")
        self.errors = open(os.path.join(self.workdir, self.log_file), "w")
        return self.launch([tool("rsyslogd"), "-n", "-f", cfg, "-i", os.path.join(self.workdir,
                            "rsyslogd.pid")], self.port, stderr=self.errors)

    def kernel_drops(self):
        return None


UDP_MESSAGES = 1_000_000
UDP_SIZE = 200


def wait_archive_settled(archive, expected, interval):
    """Waits until the archive holds `expected` bytes or has not grown for 1 s; returns when it
    last grew (time.monotonic())."""
    last, last_change = -1, time.monotonic()
    while True:
        now = sum(os.path.getsize(f) for f in files_under(archive))
        if now != last:
            last, last_change = now, time.monotonic()
        if now >= expected or time.monotonic() - last_change > 1.0:
            return last_change
        time.sleep(interval)


def count_datagram_lines(system, archive, size):
    """The datagrams archived: every line must be one whole datagram of `size` bytes (and its
    newline), none twice."""
    seen = set()
    for f in sorted(files_under(archive)):
        with open(f, "rb") as fh:
            for line in fh:
                m = re.fullmatch(rb"<14>([0-9a-f]{8}) ([0-9]{10}) x+\n", line)
                if m is None or len(line) != size + 1:
                    raise RuntimeError(f"{system.name}: a line that is not a whole datagram: "
                                       f"{line[:80]!r}")
                if m.group(2) in seen:
                    raise RuntimeError(f"{system.name}: datagram {m.group(2)} twice")
                seen.add(m.group(2))
    return len(seen)


def run_udp(system, base_dir, messages, size):
    """Sends `messages` datagrams of `size` bytes as fast as one sender goes, then waits until
    the archive stops growing (1 s without a new byte). Every archived line must be one whole
    datagram, none twice; what is missing is the loss."""
    archive = tempfile.mkdtemp(prefix="archive-", dir=base_dir)
    try:
        to = system.start(archive)
        cpu0 = tree_cpu(system.proc.pid)
        t0 = time.monotonic()
        r = subprocess.run([LOADGEN, "udp", "--to", to, "--messages", str(messages), "--lines",
                            str(size)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"loadgen udp failed: {r.stderr.strip()} {r.stdout.strip()}")
        wall = wait_archive_settled(archive, messages * (size + 1), 0.005) - t0
        cpu = tree_cpu(system.proc.pid) - cpu0
        drops = system.kernel_drops()
        system.stop()
        got = count_datagram_lines(system, archive, size)
        return {"msgs_per_s": got / wall, "cpu_us_per_msg": cpu / max(got, 1) * 1e6,
                "loss": 1 - got / messages, "received": got, "wall": wall, "cpu": cpu,
                "send_seconds": json.loads(r.stdout)["seconds"], "kernel_drops": drops}
    finally:
        try:
            system.stop()
        except Exception:
            pass
        shutil.rmtree(archive, ignore_errors=True)


UDP_DRAIN_MESSAGES = 300_000


def run_udp_drain(system, base_dir, messages, size):
    """The receiver as the limit: with the receiver stopped (SIGSTOP, every thread), one sender
    queues `messages` datagrams in its 1 GiB receive buffer; then SIGCONT, and the time until the
    archive holds them all is the receiver's own rate, whatever the sender could do. Checked as
    run_udp checks (each line one whole datagram, none twice)."""
    archive = tempfile.mkdtemp(prefix="archive-", dir=base_dir)
    stopped = []
    try:
        to = system.start(archive)
        time.sleep(0.2)  # set up and waiting in its loop
        stopped = tree_pids(system.proc.pid)
        for p in stopped:
            os.kill(p, signal.SIGSTOP)
        r = subprocess.run([LOADGEN, "udp", "--to", to, "--messages", str(messages), "--lines",
                            str(size)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"loadgen udp failed: {r.stderr.strip()} {r.stdout.strip()}")
        cpu0 = tree_cpu(system.proc.pid)
        t0 = time.monotonic()
        for p in stopped:
            os.kill(p, signal.SIGCONT)
        stopped = []
        wall = wait_archive_settled(archive, messages * (size + 1), 0.002) - t0
        cpu = tree_cpu(system.proc.pid) - cpu0
        system.stop()
        got = count_datagram_lines(system, archive, size)
        return {"msgs_per_s": got / wall, "cpu_us_per_msg": cpu / max(got, 1) * 1e6,
                "loss": 1 - got / messages, "received": got, "wall": wall, "cpu": cpu}
    finally:
        for p in stopped:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            system.stop()
        except Exception:
            pass
        shutil.rmtree(archive, ignore_errors=True)


def scenario_udp_drain(args):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    messages = 20_000 if args.quick else UDP_DRAIN_MESSAGES
    systems = lineup(args, [own("spliced", lambda **kw: SplicedUdp(work, rcvbuf="1GiB", **kw)),
                            own("spliced workers 2",
                                lambda **kw: SplicedUdp(work, workers=2, rcvbuf="1GiB", **kw)),
                            ("rsyslog", lambda: RSyslogUdp(work, rcvbuf="1g"))])
    try:
        results = run_rounds(args, systems,
                             lambda _, s: run_udp_drain(s, work, messages, UDP_SIZE),
                             lambda r: f"{r['msgs_per_s']:.0f} msgs/s "
                                       f"{r['cpu_us_per_msg']:.2f} CPU-us/msg "
                                       f"loss {r['loss'] * 100:.2f}%")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"syslog over UDP, the receiver as the limit: {messages} queued "
                        f"datagrams of {UDP_SIZE} B drained",
            "kind": "udp",
            "results": {name: {"msgs_per_s": statistics.median(r["msgs_per_s"] for r in rs),
                               "cpu_us_per_msg": statistics.median(r["cpu_us_per_msg"]
                                                                   for r in rs),
                               "loss": statistics.median(r["loss"] for r in rs),
                               "runs": len(rs), "all": rs} for name, rs in results.items()}}


def scenario_udp(args):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    messages = 20_000 if args.quick else UDP_MESSAGES
    systems = lineup(args, [own("spliced", lambda **kw: SplicedUdp(work, **kw)),
                            own("spliced workers 2",
                                lambda **kw: SplicedUdp(work, workers=2, **kw)),
                            ("rsyslog", lambda: RSyslogUdp(work))])
    try:
        results = run_rounds(args, systems, lambda _, s: run_udp(s, work, messages, UDP_SIZE),
                             lambda r: f"{r['msgs_per_s']:.0f} msgs/s "
                                       f"{r['cpu_us_per_msg']:.2f} CPU-us/msg "
                                       f"loss {r['loss'] * 100:.2f}%")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"syslog over UDP: {messages} messages of {UDP_SIZE} B, one sender",
            "kind": "udp",
            "results": {name: {"msgs_per_s": statistics.median(r["msgs_per_s"] for r in rs),
                               "cpu_us_per_msg": statistics.median(r["cpu_us_per_msg"]
                                                                   for r in rs),
                               "loss": statistics.median(r["loss"] for r in rs),
                               "runs": len(rs), "all": rs} for name, rs in results.items()}}


class Sink:
    """spliced-loadgen sink: discards with splice into /dev/null and counts what arrived."""

    def __init__(self, workdir, epoll=False, reply=0, check=False):
        self.port_file = os.path.join(workdir, f"sink-{time.monotonic_ns()}.port")
        self.proc = subprocess.Popen([LOADGEN, "sink", "--listen", self.port_file,
                                      *(["--epoll"] if epoll else []), "--reply", str(reply),
                                      *(["--check"] if check else [])])
        try:
            wait_for(lambda: os.path.exists(self.port_file), 5, "the sink to listen")
        except RuntimeError:
            self.stop()
            raise
        with open(self.port_file) as f:
            self.port = int(f.read())

    def stats(self):
        try:
            with open(self.port_file + ".stats") as f:
                return json.load(f)
        except FileNotFoundError:
            return {"connections": 0, "open": 0, "bytes": 0}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Echo(Sink):
    """spliced-loadgen echo: sends every byte back (the upstream of the latency scenarios)."""

    def __init__(self, workdir):
        self.port_file = os.path.join(workdir, f"echo-{time.monotonic_ns()}.port")
        self.proc = subprocess.Popen([LOADGEN, "echo", "--listen", self.port_file])
        try:
            wait_for(lambda: os.path.exists(self.port_file), 5, "the echo server to listen")
        except RuntimeError:
            self.stop()
            raise
        with open(self.port_file) as f:
            self.port = int(f.read())


class Direct:
    """No proxy: the clients talk to the upstream itself (the latency floor)."""
    name = "direct"

    def start_forward(self, upstream_port):
        return f"127.0.0.1:{upstream_port}"

    def settle(self):
        pass


class SplicedProxy(Spliced):
    def __init__(self, workdir, pipe_size="1MiB", pipes_max=1024, name="spliced", binary=None,
                 workers=1, upgrade_at=()):
        super().__init__(workdir, pipe_size=pipe_size, pipes_max=pipes_max, name=name,
                         binary=binary, workers=workers)
        # The reloads (by index) that are binary upgrades (SIGUSR2) instead of SIGHUPs.
        self.upgrade_at = set(upgrade_at)
        self.pid = None  # the process serving now: the one started, or its last successor

    def start_forward(self, upstream_port):
        self.cfg = os.path.join(self.workdir, "spliced-proxy.yaml")
        port, admin = free_ports(2)
        self.port, self.admin = str(port), f"127.0.0.1:{admin}"
        self.upstream_port = upstream_port
        self.write_proxy_config("round_robin")
        log = os.path.join(self.workdir, "spliced.log")
        self.log_start = os.path.getsize(log) if os.path.exists(log) else 0  # this run's lines
        self.pid = None
        return self.launch([self.program(), "-c", self.cfg], self.port, stderr=self.log())

    def write_proxy_config(self, balance):
        # With upgrades, info: the old process logs how long it froze the connections.
        level = "info" if getattr(self, "upgrade_at", None) else "warn"
        with open(self.cfg, "w") as f:
            f.write(f"""log: {{ level: {level} }}
admin: {{ listen: {self.admin} }}
pipes: {{ size: {self.pipe_size}, max: {self.pipes_max} }}
workers: {self.workers}
routes:
  - name: bench
    listen: 127.0.0.1:{self.port}
    max_connections: 100000
    forward:
      upstreams: [127.0.0.1:{self.upstream_port}]
      balance: {balance}
""")

    def reload(self, i):
        """A changed route (balance), applied in place: SIGHUP; or, at the indexes in
        upgrade_at, a binary upgrade (SIGUSR2): the same binary started again takes over every
        listener and live stream, and the old process exits."""
        self.write_proxy_config("least_connections" if i % 2 == 0 else "round_robin")
        pid = self.pid or self.proc.pid
        if i not in self.upgrade_at:
            os.kill(pid, signal.SIGHUP)
            return
        os.kill(pid, signal.SIGUSR2)
        # The new process is the old one's child until the old one exits.
        new = []
        wait_for(lambda: new.extend(children(pid)) or new, 10, "the upgraded spliced to start")
        wait_for(lambda: not alive(pid), 30, "the old spliced to hand over and exit")
        if pid == self.proc.pid:
            self.proc.wait()
        self.pid = int(new[0])

    def old_processes(self):
        return 0  # an upgrade's old process exits once it has handed everything over

    def pauses_ms(self):
        """How long each binary upgrade froze the connections, as the old processes logged it."""
        try:
            with open(os.path.join(self.workdir, "spliced.log")) as f:
                f.seek(getattr(self, "log_start", 0))
                return [float(m) for m in re.findall(r"after a pause of ([0-9.]+) ms", f.read())]
        except OSError:
            return []

    def stop(self):
        if self.pid is None:
            return System.stop(self)
        os.kill(self.pid, signal.SIGTERM)  # not a child of this script: watched through /proc
        wait_for(lambda: not alive(self.pid), 30, f"{self.name} to stop")


class HAProxy(System):
    """HAProxy mode tcp, `threads` threads (nbthread, as spliced's workers), 1 MiB pipes as
    spliced's."""

    def __init__(self, workdir, splice=True, threads=1):
        self.workdir, self.splice, self.threads = workdir, splice, threads
        self.name = "haproxy+splice" if splice else "haproxy"
        if threads > 1:
            self.name += f" nbthread {threads}"

    def start_forward(self, upstream_port):
        self.port = free_port()
        self.upstream_port = upstream_port
        self.cfg = os.path.join(self.workdir, "haproxy.cfg")
        self.olds = []
        self.write_config("roundrobin")
        return self.launch([tool("haproxy"), "-db", "-f", self.cfg], self.port,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reload(self, i):
        """HAProxy's reload: a new process takes the port, the old one (-sf) stops listening and
        keeps its connections until they end."""
        self.write_config("leastconn" if i % 2 == 0 else "roundrobin")
        self.olds.append(self.proc)
        self.proc = subprocess.Popen([tool("haproxy"), "-db", "-f", self.cfg, "-sf",
                                      str(self.proc.pid)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def old_processes(self):
        return sum(1 for p in getattr(self, "olds", []) if p.poll() is None)

    def stop(self):
        for p in getattr(self, "olds", []):
            if p.poll() is None:
                p.terminate()
                p.wait()
        System.stop(self)

    def write_config(self, balance):
        upstream_port = self.upstream_port
        with open(self.cfg, "w") as f:
            f.write(f"""global
    maxconn 7000
    nbthread {self.threads}
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
    balance {balance}
    server s1 127.0.0.1:{upstream_port}
""")



class NginxStream(System):
    """nginx stream proxy, `workers` worker processes (reuseport with more than one, as spliced),
    256 KiB proxy buffers, half-close passed on (as the others)."""

    def __init__(self, workdir, workers=1):
        self.workdir, self.workers = workdir, workers
        self.name = "nginx" if workers == 1 else f"nginx {workers} workers"

    def start_forward(self, upstream_port):
        self.port = free_port()
        self.upstream_port = upstream_port
        self.cfg = os.path.join(self.workdir, "nginx.conf")
        self.write_config("5s")
        return self.launch([tool("nginx"), "-c", self.cfg, "-p", self.workdir], self.port,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reload(self, i):
        """nginx's reload: SIGHUP to the master, which starts new workers; the old ones stop
        accepting and finish their connections (no worker_shutdown_timeout: they wait for them)."""
        self.write_config("6s" if i % 2 == 0 else "5s")
        self.proc.send_signal(signal.SIGHUP)

    def old_processes(self):
        n = 0
        for pid in children(self.proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    n += b"shutting down" in f.read()
            except OSError:
                pass
        return n

    def write_config(self, connect_timeout):
        upstream_port = self.upstream_port
        with open(self.cfg, "w") as f:
            f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {self.workers};
worker_rlimit_nofile 20000;
daemon off;
pid {self.workdir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 12000; }}
stream {{
    server {{
        listen 127.0.0.1:{self.port} backlog=4096{" reuseport" if self.workers > 1 else ""};
        proxy_pass 127.0.0.1:{upstream_port};
        proxy_connect_timeout {connect_timeout};
        proxy_buffer_size 256k;
        proxy_half_close on;
    }}
}}
""")



def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except FileNotFoundError:
        return []


class SocatProxy(System):
    name = "socat"

    def settle(self):
        # Each connection's child exits after the sink closes; once reaped, its CPU is in ours.
        wait_for(lambda: not children(self.proc.pid), 30, "socat's children to exit")

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


def run_forward(system, work, clients, nbytes, check=False):
    """One timed run; with `check`, an untimed one whose sink compares every byte with the
    stream each connection's first block names."""
    sink = None
    try:
        sink = Sink(work, check=check)
        to = system.start_forward(sink.port)
        cpu0 = tree_cpu(system.proc.pid)
        budget = CpuBudget(system.proc.pid, sink)
        t0 = time.monotonic()
        system.send(to, clients, nbytes)
        wall = time.monotonic() - t0
        spent = budget.end()
        system.settle()
        cpu = tree_cpu(system.proc.pid) - cpu0
        copied = system.copy_bytes() if hasattr(system, "copy_bytes") else None
        total = clients * nbytes
        wait_for(lambda: sink.stats()["connections"] == clients, 30, "the sink's totals")
        got = sink.stats()
        if got["bytes"] != total:
            raise RuntimeError(f"{system.name}: the sink got {got['bytes']} bytes of {total}")
        if got.get("bad"):
            raise RuntimeError(f"{system.name}: {got['bad']} of {clients} forwarded streams "
                               "differ from what their client sent")
        if check and got.get("seeds") != clients * (clients + 1) // 2:
            raise RuntimeError(f"{system.name}: the forwarded streams are not each client's "
                               "once (one repeated, another lost)")
        gb = total / 1e9
        return {"gbps": gb / wall, "cpu_per_gb": cpu / gb, "wall": wall, "cpu": cpu,
                "copy_fallback_bytes": copied, **spent}
    finally:
        stop_all(system, sink)


BASELINE = " (baseline)"  # suffix of the name of a spliced system run with --baseline's binary


def own(name, make):
    """One of spliced's own systems, for lineup: make(binary=..., name=...) makes it."""
    return (name, make, True)


def lineup(args, systems):
    """The (name, make) pairs run_rounds alternates, from a scenario's systems in order: each of
    spliced's own (see own) with the build's binary and, with --baseline, right after it the same
    system with the baseline's binary, named with BASELINE after it; each peer, a (name, make)
    pair, unless --only-spliced."""
    out = []
    for name, make, *mine in systems:
        if not mine:
            if not args.only_spliced:
                out.append((name, make))
            continue
        variants = [(name, None)]  # None: the build's spliced (SPLICED)
        if args.baseline:
            variants.append((name + BASELINE, baseline_binary(args)))
        for label, binary in variants:
            out.append((label, lambda make=make, label=label, binary=binary:
                        make(binary=binary, name=label)))
    return out


def baseline_binary(args):
    return os.path.join(os.path.abspath(args.baseline), "spliced")


def forward_systems(args, work):
    """One-thread systems, then two-thread ones (spliced workers: 2, HAProxy nbthread 2, nginx
    worker_processes 2); socat forks a process per connection and uses every core."""
    return lineup(args, [own("spliced", lambda **kw: SplicedProxy(work, **kw)),
                         ("haproxy+splice", lambda: HAProxy(work, splice=True)),
                         ("haproxy", lambda: HAProxy(work, splice=False)),
                         ("nginx", lambda: NginxStream(work)),
                         own("spliced workers 2", lambda **kw: SplicedProxy(work, workers=2, **kw)),
                         ("haproxy+splice nbthread 2",
                          lambda: HAProxy(work, splice=True, threads=2)),
                         ("haproxy nbthread 2", lambda: HAProxy(work, splice=False, threads=2)),
                         ("nginx 2 workers", lambda: NginxStream(work, workers=2)),
                         ("socat", lambda: SocatProxy(work))])


def tree_memory_kib(pid):
    """Proportional set size (Pss, smaps_rollup) of a process tree in KiB: each process's own
    pages plus its share of pages shared with others, so forked children are not counted twice."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return total


def tree_fds(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except FileNotFoundError:
            pass
    return total


def alive(pid):
    """True while `pid` runs (a zombie left for init to reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_all(system, sink):
    try:
        if hasattr(system, "proc"):
            system.stop()
    except Exception as e:
        print(f"  warning: {e}", file=sys.stderr)
    if sink is not None:
        sink.stop()


IDLE_HELLO = 64  # bytes each idle connection sends first, so it has been through the data path


def run_idle(system, work, n):
    """n connections opened through the proxy, each sending 64 bytes, then held open: memory and
    fds of the system under test per connection, from the difference to before."""
    sink = gen = None
    try:
        sink = Sink(work, epoll=True)
        to = system.start_forward(sink.port)
        time.sleep(0.2)
        mem0, fd0 = tree_memory_kib(system.proc.pid), tree_fds(system.proc.pid)
        gen = subprocess.Popen([LOADGEN, "idle", "--to", to, "--clients", str(n), "--bytes",
                                str(IDLE_HELLO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
        if not select.select([gen.stdout], [], [], 120)[0]:
            raise RuntimeError(f"{system.name}: {n} idle connections not open after 120 s")
        ready = json.loads(gen.stdout.readline() or "{}")
        if ready.get("open") != n or ready.get("failed"):
            raise RuntimeError(f"{system.name}: idle clients: {ready}")
        wait_for(lambda: sink.stats()["open"] == n and sink.stats()["bytes"] == n * IDLE_HELLO,
                 60, f"{system.name}: all {n} idle connections and their bytes at the sink")
        time.sleep(0.5)
        mem1, fd1 = tree_memory_kib(system.proc.pid), tree_fds(system.proc.pid)
        gen.stdin.close()
        gen.wait(timeout=60)
        wait_for(lambda: sink.stats()["open"] == 0, 60, f"{system.name} to close them all")
        return {"kib_per_conn": (mem1 - mem0) / n, "fds_per_conn": (fd1 - fd0) / n,
                "open_seconds": ready["seconds"]}
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait()
        stop_all(system, sink)


RATE_THREADS = 32  # concurrent clients making short connections
RATE_BYTES = 64    # each request and each answer


def run_rate(system, work, n):
    """n short connections through the proxy (64-byte request, 64-byte answer, close)."""
    sink = None
    try:
        sink = Sink(work, epoll=True, reply=RATE_BYTES)
        to = system.start_forward(sink.port)
        cpu0 = tree_cpu(system.proc.pid)
        budget = CpuBudget(system.proc.pid, sink)
        t0 = time.monotonic()
        r = subprocess.run([LOADGEN, "rate", "--to", to, "--clients", str(RATE_THREADS), "--conns",
                            str(n), "--bytes", str(RATE_BYTES), "--reply", str(RATE_BYTES)],
                           capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t0
        spent = budget.end()
        system.settle()
        cpu = tree_cpu(system.proc.pid) - cpu0
        if r.returncode != 0:
            raise RuntimeError(f"{system.name}: short connections failed: {r.stdout.strip()} "
                               f"{r.stderr.strip()}")
        # Every client had its answer (the load generator checks it), so the sink saw each one;
        # it may see more: a proxy whose connect timed out on a busy machine tries again, and the
        # first attempt may still reach the sink's queue. Those are counted, not an error.
        try:
            wait_for(lambda: sink.stats()["connections"] >= n and sink.stats()["open"] == 0, 30,
                     f"{system.name}: the sink's totals")
        except RuntimeError:
            raise RuntimeError(f"{system.name}: the sink's totals after 30 s: {sink.stats()} "
                               f"for {n} connections") from None
        if sink.stats()["bytes"] != n * RATE_BYTES:
            raise RuntimeError(f"{system.name}: the sink got {sink.stats()['bytes']} bytes of "
                               f"{n * RATE_BYTES}")
        extra = sink.stats()["connections"] - n
        if extra:
            print(f"  {system.name}: {extra} upstream connection(s) more than clients (connects "
                  "tried again)", file=sys.stderr)
        return {"conns_per_s": n / wall, "cpu_us_per_conn": cpu / n * 1e6, "wall": wall,
                "cpu": cpu, "extra_upstream_connections": extra, **spent}
    finally:
        stop_all(system, sink)


SYSCALL_CONNS = 2000  # short connections counted under strace (after 200 not counted)


def run_syscalls(system, work, n):
    """System calls per short proxied connection (64-byte request and answer, close), counted by
    strace -c attached to every process and thread of the system under test. A count, not a
    time: strace slows the run down but does not change what is called."""
    sink = tracer = None
    out = os.path.join(work, f"strace-{time.monotonic_ns()}.txt")
    try:
        sink = Sink(work, epoll=True, reply=RATE_BYTES)
        to = system.start_forward(sink.port)
        rate = [LOADGEN, "rate", "--to", to, "--clients", "8", "--bytes", str(RATE_BYTES),
                "--reply", str(RATE_BYTES)]
        subprocess.run(rate + ["--conns", "200"], capture_output=True, text=True, timeout=120,
                       check=True)
        pids = [a for p in tree_pids(system.proc.pid) for a in ("-p", str(p))]
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, *pids],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        r = subprocess.run(rate + ["--conns", str(n)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{system.name}: short connections failed: {r.stdout.strip()}")
        time.sleep(0.3)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        calls = {}
        with open(out) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5 or not fields[0][0].isdigit():
                    continue
                # % time, seconds, usecs/call, calls, [errors], syscall
                calls[fields[-1]] = int(fields[3])
        total = calls.pop("total", sum(calls.values()))
        top = sorted(calls.items(), key=lambda kv: -kv[1])
        return {"syscalls_per_conn": total / n,
                "calls": {k: v / n for k, v in top if v / n >= 0.05}}
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        stop_all(system, sink)


def scenario_syscalls(args, n=SYSCALL_CONNS):
    ensure_packages(["strace"])
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    n = 500 if args.quick else n
    try:
        results = run_rounds(args, forward_systems(args, work),
                             lambda _, s: run_syscalls(s, work, n),
                             lambda r: f"{r['syscalls_per_conn']:.2f} syscalls/conn")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {}
    for name, rs in results.items():
        mid = sorted(rs, key=lambda r: r["syscalls_per_conn"])[len(rs) // 2]
        res[name] = {"syscalls_per_conn": mid["syscalls_per_conn"], "calls": mid["calls"],
                     "runs": len(rs), "all": rs}
    return {"scenario": f"system calls: {n} short proxied connections (strace -c)",
            "kind": "syscalls", "results": res}


LATENCY_SECONDS = 3  # of ping-pong per run


def run_latency(system, work, clients, size, seconds):
    """clients connections through the proxy each send size bytes to an echo upstream and wait
    for them back, for seconds: round trips per second, latency percentiles, and the proxy's CPU
    per round trip."""
    echo = None
    try:
        echo = Echo(work)
        to = system.start_forward(echo.port)
        pid = getattr(getattr(system, "proc", None), "pid", None)
        cmd = [LOADGEN, "pingpong", "--to", to, "--clients", str(clients), "--bytes", str(size)]
        subprocess.run(cmd + ["--seconds", "0.2"], capture_output=True, text=True, timeout=60)
        cpu0 = tree_cpu(pid) if pid else 0.0
        r = subprocess.run(cmd + ["--seconds", str(seconds)], capture_output=True, text=True,
                           timeout=seconds + 60)
        cpu = (tree_cpu(pid) - cpu0) if pid else 0.0
        res = json.loads(r.stdout or "{}")
        if r.returncode != 0 or not res.get("round_trips"):
            raise RuntimeError(f"{system.name}: ping-pong failed: {r.stdout.strip()} "
                               f"{r.stderr.strip()}")
        return {"rt_per_s": res["round_trips"] / res["seconds"], "p50_us": res["p50_us"],
                "p99_us": res["p99_us"], "p999_us": res["p999_us"], "max_us": res["max_us"],
                "cpu_us_per_rt": cpu / res["round_trips"] * 1e6}
    finally:
        if hasattr(system, "proc"):
            stop_all(system, echo)
        elif echo is not None:
            echo.stop()


def latency_systems(args, work):
    return [("direct", lambda: Direct())] + lineup(args, [
        own("spliced", lambda **kw: SplicedProxy(work, **kw)),
        own("spliced copy", lambda **kw: SplicedProxy(work, pipes_max=0, **kw)),
        ("haproxy+splice", lambda: HAProxy(work, splice=True)),
        ("haproxy", lambda: HAProxy(work, splice=False)),
        ("nginx", lambda: NginxStream(work))])


def scenario_latency(args, clients, size):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    seconds = 0.5 if args.quick else LATENCY_SECONDS
    try:
        results = run_rounds(args, latency_systems(args, work),
                             lambda _, s: run_latency(s, work, clients, size, seconds),
                             lambda r: f"{r['rt_per_s']:.0f} rt/s p50 {r['p50_us']:.0f} "
                                       f"p99 {r['p99_us']:.0f} p99.9 {r['p999_us']:.0f} µs "
                                       f"{r['cpu_us_per_rt']:.1f} CPU-µs/rt")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = ["rt_per_s", "p50_us", "p99_us", "p999_us", "max_us", "cpu_us_per_rt"]
    return {"scenario": f"latency: {clients} x {size} B ping-pong through the proxy to an echo "
                        f"upstream", "kind": "latency",
            "results": {name: {**{k: statistics.median(r[k] for r in rs) for k in keys},
                               "runs": len(rs), "all": rs} for name, rs in results.items()}}


CAT_BYTES = 1 << 30  # the plain segment the cat scenario reads (16 MiB of log lines, 64 times)
CAT_SPARSE = 4 << 30  # the sparse segment of the peak-RSS rows


def make_cat_archive(work, nbytes):
    """An archive dir with one plain segment of nbytes of log lines (default name template), one
    with the same bytes as a .zst segment (zstd -3, the compressor's default level), and one with
    a CAT_SPARSE sparse segment. Returns (plain_dir, plain_file, zst_dir, zst_file, sparse_dir)."""
    import random
    rnd = random.Random(7)
    lines = []
    size = 0
    while size < min(nbytes, 16 << 20):
        line = (f"<134>2026-12-02T12:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}Z host-"
                f"{rnd.randrange(40)} app[{rnd.randrange(1, 65536)}]: user={rnd.randrange(10**6)} "
                f"action={rnd.choice(['login', 'logout', 'get', 'put', 'delete'])} "
                f"bytes={rnd.randrange(10**7)} id={rnd.randbytes(16).hex()}\n").encode()
        lines.append(line)
        size += len(line)
    block = b"".join(lines)
    name = "2026/12/02/app-127.0.0.1-1-120000-000000.log"
    dirs = []
    for sub in ["plain", "zst", "sparse"]:
        d = os.path.join(work, sub)
        os.makedirs(os.path.join(d, "2026/12/02"))
        open(os.path.join(d, ".spliced.lock"), "w").close()
        dirs.append(d)
    plain = os.path.join(dirs[0], name)
    with open(plain, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[:left])
            left -= min(left, len(block))
    zst = os.path.join(dirs[1], name + ".zst")
    subprocess.run(["zstd", "-q", "-3", "-T1", plain, "-o", zst], check=True)
    with open(os.path.join(dirs[2], name), "wb") as f:
        f.truncate(CAT_SPARSE)
    return dirs[0], plain, dirs[1], zst, dirs[2]


def run_cat(cmd, sink, nbytes):
    """Runs cmd with stdout into sink ("pipe": a pipe drained by cat into /dev/null; "null":
    /dev/null) and returns GB/s (wall, to the reader's end), CPU-s per GB of cmd (utime+stime
    from wait4) and its peak RSS (VmHWM after its exec, sampled every 2 ms)."""
    devnull = open(os.devnull, "wb")
    reader = None
    t0 = time.perf_counter()
    if sink == "pipe":
        r, w = os.pipe()
        reader = subprocess.Popen(["cat"], stdin=r, stdout=devnull)
        proc = subprocess.Popen(cmd, stdout=w)
        os.close(r)
        os.close(w)
    else:
        proc = subprocess.Popen(cmd, stdout=devnull)
    exe = os.path.realpath(shutil.which(cmd[0]) or cmd[0])
    hwm = 0
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            if os.path.realpath(f"/proc/{proc.pid}/exe") == exe:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if reader is not None:
        reader.wait()
    wall = time.perf_counter() - t0
    devnull.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    cpu = ru.ru_utime + ru.ru_stime
    return {"gbps": nbytes / wall / 1e9, "cpu_per_gb": cpu / (nbytes / 1e9),
            "rss_mib": hwm / 1024}


def scenario_cat(args):
    """spliced cat against cat (a plain segment) and zstdcat (a .zst one), into a pipe and into
    /dev/null; then the peak RSS of reading a 4 GiB sparse segment."""
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    nbytes = 64 << 20 if args.quick else CAT_BYTES
    out = []
    try:
        plain_dir, plain, zst_dir, zst, sparse_dir = make_cat_archive(work, nbytes)
        for sink, where in [("pipe", "into a pipe"), ("null", "into /dev/null")]:
            systems = lineup(args, [
                own("spliced cat", lambda binary=None, **kw: [binary or SPLICED, "cat", plain_dir]),
                ("cat", lambda: ["cat", plain]),
                own("spliced cat .zst",
                    lambda binary=None, **kw: [binary or SPLICED, "cat", zst_dir]),
                ("zstdcat", lambda: ["zstdcat", "-q", zst])])
            results = run_rounds(args, systems, lambda _, cmd: run_cat(cmd, sink, nbytes),
                                 lambda r: f"{show_throughput(r)}  {r['rss_mib']:.1f} MiB")
            out.append({"scenario": f"cat: a {nbytes >> 20} MiB segment {where}", "kind": "cat",
                        "results": {name: {k: statistics.median(r[k] for r in rs)
                                           for k in ["gbps", "cpu_per_gb", "rss_mib"]}
                                    | {"runs": len(rs), "all": rs}
                                    for name, rs in results.items()}})
        for sink, where in [("pipe", "into a pipe"), ("null", "into /dev/null")]:
            systems = lineup(args, [
                own("spliced cat", lambda binary=None, **kw: [binary or SPLICED, "cat",
                                                                sparse_dir]),
                ("cat", lambda: ["cat", os.path.join(
                    sparse_dir, "2026/12/02/app-127.0.0.1-1-120000-000000.log")])])
            runs = argparse.Namespace(**{**vars(args), "runs": 1 if args.quick else 3})
            results = run_rounds(runs, systems, lambda _, cmd: run_cat(cmd, sink, CAT_SPARSE),
                                 lambda r: f"{show_throughput(r)}  {r['rss_mib']:.1f} MiB")
            out.append({"scenario": f"cat: a 4 GiB sparse segment {where}: peak RSS",
                        "kind": "cat",
                        "results": {name: {k: statistics.median(r[k] for r in rs)
                                           for k in ["gbps", "cpu_per_gb", "rss_mib"]}
                                    | {"runs": len(rs), "all": rs}
                                    for name, rs in results.items()}})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def show_throughput(r):
    return f"{r['gbps']:.3f} GB/s  {r['cpu_per_gb']:.3f} CPU-s/GB"


def run_rounds(args, systems, run_one, show):
    """Every system once per round, each round starting with a different one; round -1 is the
    discarded warm-up."""
    results = {name: [] for name, _ in systems}
    width = max([14] + [len(name) for name in results])
    for i in range(-1 if args.warmup else 0, args.runs):
        for name, make in rotated(systems, i):
            r = run_one(name, make())
            label = "warm-up" if i < 0 else f"run {i + 1}"
            print(f"  {label} {name:{width}s} {show(r)}", file=sys.stderr)
            if i >= 0:
                results[name].append(r)
    return results


def run_reload(system, work, clients, steady, reloads, interval, after):
    """`clients` long streams through `system` for steady + reloads x interval + after seconds,
    reloading it every `interval` seconds after the first `steady` ones (the config alternates
    between two versions that differ in one forward setting). Every stream is then checked byte
    for byte by the sink, which also counts the bytes it received in each 100 ms. Returns the
    steady throughput (the median 100 ms window before the first reload, and the worst), the
    worst window from the first reload to one interval after the last, the streams reset, the
    bytes lost (sent by a client, never received: each stream received is a correct prefix of
    what was sent), and the most old processes seen still serving connections."""
    sink = None
    try:
        sink = Sink(work, check=True)
        to = system.start_forward(sink.port)
        seconds = steady + reloads * interval + after
        t0 = time.monotonic()
        gen = subprocess.Popen([LOADGEN, "streams", "--to", to, "--clients", str(clients),
                                "--seconds", str(seconds), "--chunk", "65536"],
                               stdout=subprocess.PIPE, text=True)
        done, olds, hups = 0, 0, []
        next_reload, next_look = t0 + steady, t0
        while gen.poll() is None:
            now = time.monotonic()
            if done < reloads and now >= next_reload:
                system.reload(done)
                hups.append(now)
                done += 1
                next_reload += interval
            if now >= next_look:
                olds = max(olds, system.old_processes())
                next_look = now + 0.2
            time.sleep(0.005)
        sent = json.loads(gen.stdout.read())
        pauses = system.pauses_ms() if hasattr(system, "pauses_ms") else []
        if sent.get("failed"):
            raise RuntimeError(f"{system.name}: {sent['failed']} stream(s) failed: "
                               f"{sent['error']}; its log: {system.log_tail()}")
        # Every client saw its stream closed; the upstream side of each should close too. One
        # that a proxy keeps open (an old process) is counted, not waited for.
        try:
            wait_for(lambda: sink.stats()["connections"] >= clients and not sink.stats()["open"],
                     15, "the sink's totals")
        except RuntimeError:
            pass
        time.sleep(0.1)  # the windows file follows the stats file
        got = sink.stats()
        if got.get("bad"):
            raise RuntimeError(f"{system.name}: {got['bad']} stream(s) differ from what their "
                               "client sent")
        with open(sink.port_file + ".windows") as f:
            w = json.load(f)
        base = w["start_ns"] / 1e9

        def rates(start, end):  # GB/s of each whole 100 ms window within [start, end)
            return [b / 0.1 / 1e9 for i, b in enumerate(w["bytes"])
                    if base + i * 0.1 >= start and base + (i + 1) * 0.1 <= end]

        calm = rates(t0 + 0.5, hups[0])
        during = rates(hups[0], hups[-1] + interval)
        steady_gbps = statistics.median(calm)
        worst = min(during)
        return {"steady_gbps": steady_gbps, "worst_gbps": worst, "calm_worst_gbps": min(calm),
                "vs_calm": worst / min(calm) if min(calm) > 0 else 0.0,
                "dip": worst / steady_gbps if steady_gbps > 0 else 0.0,
                "resets": sent["resets"], "old_processes": olds, "left_open": got["open"],
                "lost_bytes": max(0, sent["bytes"] - got["bytes"]),
                "stall_p50_ms": sent["stall_p50_ms"], "stall_p99_ms": sent["stall_p99_ms"],
                "stall_max_ms": sent["stall_max_ms"],
                "upgrade_pause_ms": max(pauses) if pauses else None,
                "gbps": sent["bytes"] / 1e9 / sent["seconds"]}
    finally:
        stop_all(system, sink)


def scenario_reload(args):
    """Forward long streams while reloading every second: spliced (SIGHUP: the route changed in
    place) against HAProxy's reload (a new process, -sf) and nginx's (SIGHUP: new workers)."""
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    clients, steady, reloads, interval, after = 100, 2.0, 10, 1.0, 2.0
    upgrades = (3, 7)  # of the ten reloads, these two are binary upgrades (SIGUSR2)
    if args.quick:
        clients, steady, reloads, interval, after = 20, 1.0, 3, 0.5, 0.5
        upgrades = (1,)
    systems = lineup(args, [own("spliced", lambda **kw: SplicedProxy(work, **kw)),
                            own("spliced +upgrades",
                                lambda **kw: SplicedProxy(work, upgrade_at=upgrades, **kw)),
                            ("haproxy+splice", lambda: HAProxy(work, splice=True)),
                            ("nginx", lambda: NginxStream(work))])
    try:
        results = run_rounds(
            args, systems,
            lambda _, s: run_reload(s, work, clients, steady, reloads, interval, after),
            lambda r: f"steady {r['steady_gbps']:.2f} GB/s worst {r['worst_gbps']:.2f} "
                      f"(x{r['dip']:.2f}) stall p50 {r['stall_p50_ms']:.0f} ms p99 "
                      f"{r['stall_p99_ms']:.0f} ms resets {r['resets']} lost {r['lost_bytes']} "
                      f"old processes {r['old_processes']} left open {r['left_open']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"reload: forward {clients} long streams, a reload every "
                        f"{interval:g} s, {reloads} times",
            "kind": "reload",
            "results": {name: {k: statistics.median(r[k] for r in rs)
                               for k in ("steady_gbps", "worst_gbps", "calm_worst_gbps", "dip",
                                         "vs_calm", "gbps", "stall_p50_ms", "stall_p99_ms",
                                         "stall_max_ms")}
                        | {"upgrade_pause_ms": max((r["upgrade_pause_ms"] for r in rs
                                                   if r.get("upgrade_pause_ms") is not None),
                                                  default=None),
                           "resets": max(r["resets"] for r in rs),
                           "left_open": max(r["left_open"] for r in rs),
                           "lost_bytes": max(r["lost_bytes"] for r in rs),
                           "old_processes": max(r["old_processes"] for r in rs),
                           "runs": len(rs), "all": rs}
                        for name, rs in results.items()}}


def scenario_idle(args, n=5000):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    n = 200 if args.quick else n
    try:
        results = run_rounds(args, forward_systems(args, work), lambda _, s: run_idle(s, work, n),
                             lambda r: f"{r['kib_per_conn']:.2f} KiB/conn "
                                       f"{r['fds_per_conn']:.2f} fds/conn")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"idle: {n} open proxied connections", "kind": "idle",
            "results": {name: {"kib_per_conn": statistics.median(r["kib_per_conn"] for r in rs),
                               "fds_per_conn": statistics.median(r["fds_per_conn"] for r in rs),
                               "runs": len(rs), "all": rs} for name, rs in results.items()}}


def scenario_rate(args, n=20000):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    n = 500 if args.quick else n
    try:
        results = run_rounds(args, forward_systems(args, work), lambda _, s: run_rate(s, work, n),
                             lambda r: f"{r['conns_per_s']:.0f} conns/s "
                                       f"{r['cpu_us_per_conn']:.1f} CPU-us/conn")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"connection rate: {n} short connections, {RATE_THREADS} at a time",
            "kind": "rate",
            "results": {name: {"conns_per_s": statistics.median(r["conns_per_s"] for r in rs),
                               "cpu_us_per_conn": statistics.median(r["cpu_us_per_conn"]
                                                                    for r in rs),
                               "runs": len(rs), "all": rs} for name, rs in results.items()}}


def scenario_forward(args, clients, nbytes, study=False):
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    if args.quick:
        nbytes = max(nbytes // 20, 1_000_000)
    systems = forward_systems(args, work)
    if study:
        # spliced's own pipe-size study, and splice against its forced copy path.
        systems = lineup(args, [
            own("spliced pipes 64KiB", lambda **kw: SplicedProxy(work, pipe_size="64KiB", **kw)),
            own("spliced pipes 256KiB", lambda **kw: SplicedProxy(work, pipe_size="256KiB", **kw)),
            own("spliced pipes 1MiB", lambda **kw: SplicedProxy(work, pipe_size="1MiB", **kw)),
            own("spliced copy path", lambda **kw: SplicedProxy(work, pipes_max=0, **kw))])
    try:
        results = run_rounds(args, systems, lambda _, s: run_forward(s, work, clients, nbytes),
                             show_throughput)
        for name, make in systems:  # untimed: every forwarded byte compared
            run_forward(make(), work, clients, nbytes, check=True)
            print(f"  verified {name}: every stream byte for byte", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"{'pipe-size study: ' if study else ''}forward {clients} x "
                        f"{nbytes // 1_000_000} MB",
            "results": {n: summarize(rs) for n, rs in results.items()}}


def run_archive(system, base_dir, clients, nbytes, verify, line=LINE, octet=False):
    """One timed run: `clients` send `nbytes` each of lines of `line` bytes (as octet-counted
    records with `octet`), until the archive holds them all."""
    archive = tempfile.mkdtemp(prefix="archive-", dir=base_dir)
    try:
        to = system.start(archive)
        reported0 = host_reported_mib()
        cpu0 = tree_cpu(system.proc.pid)
        budget = CpuBudget(system.proc.pid)
        t0 = time.monotonic()
        system.send(to, clients, nbytes, lines=line, octet=octet)
        total = clients * nbytes
        wait_for(lambda: system.done(archive, total), 300, f"{system.name} to archive",
                 interval=system.done_interval() if hasattr(system, "done_interval") else 0.005)
        wall = time.monotonic() - t0
        spent = budget.end()
        system.settle()
        cpu = tree_cpu(system.proc.pid) - cpu0
        copied = system.copy_bytes() if hasattr(system, "copy_bytes") else None
        reported1 = host_reported_mib()
        system.stop()
        if verify:
            verify(archive, clients, nbytes, line)
        gb = total / 1e9
        return {"gbps": gb / wall, "cpu_per_gb": cpu / gb, "wall": wall, "cpu": cpu,
                "copy_fallback_bytes": copied,
                "host_reported_mib": None if reported0 is None else reported1 - reported0,
                **spent}
    finally:
        try:
            system.stop()
        except Exception:
            pass
        shutil.rmtree(archive, ignore_errors=True)


def verify_per_connection(archive, clients, nbytes, line=LINE):
    """One chain per connection ({conn} counts from 1 in accept order): each chain, its segments
    in order, must be exactly one client's stream, and every client must have one."""
    chains = {}
    for f in files_under(archive):
        m = re.search(r"/bench-(\d+)-(\d+)\.log$", f)
        if m is None:
            raise RuntimeError(f"unexpected file in the archive: {f}")
        chains.setdefault(int(m.group(1)), []).append((int(m.group(2)), f))
    if len(chains) != clients:
        raise RuntimeError(f"expected {clients} chains, found {len(chains)}")
    seeds = set()
    for conn in sorted(chains):
        files = [f for _, f in sorted(chains[conn])]
        with open(files[0], "rb") as fh:
            head = fh.read(21)
        try:
            seed = int(head[4:20], 16)
        except ValueError:
            raise RuntimeError(f"chain {conn} does not start with a line: {head!r}") from None
        if seed in seeds or not 1 <= seed <= clients:
            raise RuntimeError(f"chain {conn} starts with client {seed}'s line")
        seeds.add(seed)
        r = subprocess.run([LOADGEN, "verify-lines", "--lines", str(line), "--bytes", str(nbytes),
                            "--seed", str(seed), "--clients", "1", *files],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"chain {conn} failed verification: {r.stderr.strip()}")


def verify_shared(archive, clients, nbytes, line=LINE):
    """One shared chain (spliced's {route}-{seq}.log segments, none ending inside a line, or
    rsyslog's one file): every client's lines, whole, each client's in order."""
    segments = []
    for f in files_under(archive):
        m = re.search(r"/(?:bench-(\d+)\.log|rsyslog\.log)$", f)
        if m is None:
            raise RuntimeError(f"unexpected file in the archive: {f}")
        segments.append((int(m.group(1) or 0), f))
    r = subprocess.run([LOADGEN, "verify-lines", "--lines", str(line), "--bytes", str(nbytes),
                        "--seed", "1", "--clients", str(clients), "--whole-files",
                        *[f for _, f in sorted(segments)]], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"verification failed: {r.stderr.strip()}")


def scenario_archive(args, where, clients=4, nbytes=500_000_000):
    base = "/dev/shm" if where == "tmpfs" else os.path.join(ROOT, "build")
    if where == "disk" and not os.path.isdir(base):  # no build tree here (--build elsewhere)
        base = "/var/tmp"
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir=base)
    if args.quick:
        clients, nbytes = min(clients, 4), max(nbytes // 100, 1_000_000)
    nbytes -= nbytes % LINE
    systems = [own("spliced", lambda **kw: Spliced(work, **kw)),
               own("spliced lines", lambda **kw: Spliced(work, layout="lines", **kw)),
               own("spliced workers 2", lambda **kw: Spliced(work, workers=2, **kw)),
               own("spliced lines workers 2",
                   lambda **kw: Spliced(work, layout="lines", workers=2, **kw)),
               ("rsyslog", lambda: RSyslog(work)),
               ("socat", lambda: SocatFile(work))]
    if args.compress:
        systems.append(own("spliced+zstd", lambda **kw: Spliced(work, compress="zstd", **kw)))
    if args.manifest:
        for h in ("none", "xxh3", "sha256"):
            systems.append(own(f"spliced manifest {h}",
                               lambda h=h, **kw: Spliced(work, manifest_hash=h, **kw)))
    systems = lineup(args, systems)
    # socat's children append whatever each read returned, so lines of concurrent clients may be
    # cut apart: only its byte total is checked. The compressed segments are not verified (the
    # plain runs are): that figure is the cost of the background compressor.
    verifiers = {"spliced": verify_per_connection, "spliced lines": verify_shared,
                 "spliced workers 2": verify_per_connection,
                 "spliced lines workers 2": verify_shared, "rsyslog": verify_shared}
    for h in ("none", "xxh3", "sha256"):
        verifiers[f"spliced manifest {h}"] = verify_per_connection

    def run_one(name, system):
        if not args.quick:
            prefault_memory(clients * nbytes * 1.25 / 1e9 + 0.5)
        return run_archive(system, work, clients, nbytes,
                           verifiers.get(name.removesuffix(BASELINE)))
    try:
        results = run_rounds(args, systems, run_one, show_throughput)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"archive {clients} x {nbytes // 1_000_000} MB into {where}",
            "results": {n: summarize(rs) for n, rs in results.items()}}


class SplicedOctet(Spliced):
    """spliced with framing: octet_counted and output: lines (each message and its '\\n', what
    rsyslog's raw template writes), max_line 64 KiB, segments of 64 MiB: `layout` shared (one
    chain for every client, as rsyslog's one file) or per_connection."""

    def start(self, archive):
        cfg = os.path.join(self.workdir, "spliced-octet.yaml")
        port, admin = free_ports(2)
        self.port, self.admin = str(port), f"127.0.0.1:{admin}"
        self.archive = archive
        name = "{route}-{seq}.log" if self.layout == "shared" else "{route}-{conn}-{seq}.log"
        with open(cfg, "w") as f:
            f.write(f"""log: {{ level: warn }}
admin: {{ listen: {self.admin} }}
pipes: {{ size: {self.pipe_size}, max: {self.pipes_max} }}
workers: {self.workers}
routes:
  - name: bench
    listen: 127.0.0.1:{self.port}
    archive:
      dir: {archive}
      layout: {self.layout}
      framing: octet_counted
      output: lines
      max_line: 64KiB
      name: "{name}"
      rotate: {{ max_bytes: 64MiB }}
""")
        return self.launch([self.program(), "-c", cfg], self.port, stderr=self.log())

    def copy_bytes(self):
        # Scraped before the stop, as copy_bytes is: the bytes by the path they took.
        m = self.metrics()  # (a --baseline build from before these counters has none)
        self.framing = {"copied": m.get('spliced_framing_copied_bytes_total{route="bench"}'),
                        "spliced": m.get('spliced_framing_spliced_bytes_total{route="bench"}')}
        return m['spliced_copy_fallback_bytes_total{route="bench"}']


OCTET_SIZES = (500, 16384)  # message sizes of the octet-counted scenario (as lines, '\n' counted)


def scenario_octet(args, clients=4, nbytes=500_000_000):
    """Octet-counted syslog over TCP: `clients` send `nbytes` each of messages of each size in
    OCTET_SIZES to spliced (framing: octet_counted, output: lines; one shared chain and one
    chain per connection) and to rsyslog (imtcp, which takes octet counting, -> omfile with the
    raw template): the same records, the same archived bytes (every message and a '\\n'),
    verified line by line."""
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    if args.quick:
        nbytes = max(nbytes // 100, 1_000_000)
    out = []
    try:
        for size in OCTET_SIZES:
            n = nbytes - nbytes % size
            messages = clients * (n // size)
            systems = lineup(args, [
                own("spliced shared", lambda **kw: SplicedOctet(work, layout="shared", **kw)),
                own("spliced per_connection",
                    lambda **kw: SplicedOctet(work, layout="per_connection", **kw)),
                ("rsyslog", lambda: RSyslog(work))])
            verifiers = {"spliced shared": verify_shared, "rsyslog": verify_shared,
                         "spliced per_connection": verify_per_connection}

            def run_one(name, system, n=n, size=size, messages=messages):
                if not args.quick:
                    prefault_memory(clients * n * 1.25 / 1e9 + 0.5)
                r = run_archive(system, work, clients, n, verifiers[name.removesuffix(BASELINE)],
                                line=size, octet=True)
                r["msgs_per_s"] = messages / r["wall"]
                r["cpu_us_per_msg"] = r["cpu"] / messages * 1e6
                framing = getattr(system, "framing", None) or {}
                r["copied_bytes"], r["spliced_bytes"] = framing.get("copied"), framing.get("spliced")
                return r

            results = run_rounds(args, systems, run_one,
                                 lambda r: f"{r['msgs_per_s']:.0f} msgs/s {show_throughput(r)} "
                                           f"{r['cpu_us_per_msg']:.2f} CPU-us/msg")
            med = {name: statistics.median(r["msgs_per_s"] for r in rs)
                   for name, rs in results.items() if rs}
            ratios = {f"{name} / rsyslog": v / med["rsyslog"] for name, v in med.items()
                      if name != "rsyslog" and med.get("rsyslog")}
            out.append({"scenario": f"octet-counted TCP {clients} x {n / 1e6:.0f} MB, messages "
                                    f"of {size} B", "kind": "octet", "ratios": ratios,
                        "results": {name: {**summarize(rs),
                                           "msgs_per_s": med[name],
                                           "cpu_us_per_msg": statistics.median(
                                               r["cpu_us_per_msg"] for r in rs),
                                           "copied_bytes": rs[0]["copied_bytes"],
                                           "spliced_bytes": rs[0]["spliced_bytes"]}
                                    for name, rs in results.items()}})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


class SplicedShip(Spliced):
    """spliced with one shared chain (`framing` raw or lines, segments of 64 MiB): with `ship`, a
    shipping route (archive and forward) to the sink; without, the same archive alone."""

    def __init__(self, workdir, framing="lines", ship=True, name="spliced", binary=None,
                 workers=1):
        super().__init__(workdir, layout="shared", name=name, binary=binary, workers=workers)
        self.framing, self.ship = framing, ship

    def start_ship(self, archive, upstream_port):
        cfg = os.path.join(self.workdir, "spliced-ship.yaml")
        port, admin = free_ports(2)
        self.port, self.admin = str(port), f"127.0.0.1:{admin}"
        self.archive = archive
        forward = (f"    forward:\n      upstreams: [127.0.0.1:{upstream_port}]\n"
                   if self.ship else "")
        with open(cfg, "w") as f:
            f.write(f"""log: {{ level: warn }}
admin: {{ listen: {self.admin} }}
pipes: {{ size: {self.pipe_size}, max: {self.pipes_max} }}
workers: {self.workers}
routes:
  - name: bench
    listen: 127.0.0.1:{self.port}
    archive:
      dir: {archive}
      layout: shared
      framing: {self.framing}
      name: "{{route}}-{{seq}}.log"
      rotate: {{ max_bytes: 64MiB }}
{forward}""")
        return self.launch([self.program(), "-c", cfg], self.port, stderr=self.log())

    def needs_sink(self):
        return self.ship

    def arrived(self, archive, sink, total):
        """Every byte in the archive, and (shipping) at the sink and acknowledged: lag 0."""
        if not self.ship:
            return sum(os.path.getsize(f) for f in files_under(archive)) == total
        if sink.stats()["bytes"] != total:  # the sink's file first: it costs spliced nothing
            return False
        m = self.metrics()
        return (m['spliced_archive_bytes_total{route="bench"}'] == total
                and m['spliced_ship_lag_bytes{route="bench"}'] == 0)

    def ship_counters(self):
        m = self.metrics()
        return {"shipped": m.get('spliced_ship_bytes_total{route="bench"}'),
                "acked": m.get('spliced_ship_acked_bytes_total{route="bench"}'),
                "resent": m.get('spliced_ship_resent_bytes_total{route="bench"}')}


class SplicedShipProxy(SplicedProxy):
    """spliced's proxy route (forward only) to the same sink: a connection to it per client."""

    def start_ship(self, archive, upstream_port):
        return self.start_forward(upstream_port)

    def needs_sink(self):
        return True

    def arrived(self, archive, sink, total):
        return sink.stats()["bytes"] == total


class RSyslogForward(System):
    """rsyslogd: imtcp (as the archive scenarios) -> omfwd over TCP with the raw template, the
    action on a disk-assisted queue (LinkedList with a queue file, saved on shutdown, retried for
    ever: rsyslog's documented reliable forwarding), its files in the run's dir on tmpfs."""
    name = "rsyslog"
    log_file = "rsyslog.err"

    def __init__(self, workdir):
        self.workdir = workdir

    def start_ship(self, archive, upstream_port):
        self.port = free_port()
        cfg = os.path.join(self.workdir, "rsyslog-fwd.conf")
        with open(cfg, "w") as f:
            f.write(f"""global(workDirectory="{archive}" net.enableDNS="off" maxMessageSize="64k")
main_queue(queue.type="FixedArray" queue.size="100000" queue.dequeueBatchSize="1024"
           queue.workerThreads="1")
module(load="imtcp" maxSessions="20000")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="bench") {{
  action(type="omfwd" target="127.0.0.1" port="{upstream_port}" protocol="tcp" template="raw"
         queue.type="LinkedList" queue.filename="fwd" queue.maxDiskSpace="8g"
         queue.saveOnShutdown="on" action.resumeRetryCount="-1")
}}
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="bench")
""")
        self.errors = open(os.path.join(self.workdir, self.log_file), "w")
        return self.launch([tool("rsyslogd"), "-n", "-f", cfg, "-i", os.path.join(self.workdir,
                            "rsyslogd.pid")], self.port, stderr=self.errors)

    def needs_sink(self):
        return True

    def arrived(self, archive, sink, total):
        return sink.stats()["bytes"] == total


class CaptureSink:
    """An upstream for the untimed check run: keeps every connection's bytes in a file of its
    own (in accept order), with the Sink's stats()."""

    def __init__(self, workdir):
        import threading
        self.dir = tempfile.mkdtemp(prefix="capture-", dir=workdir)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.totals = {"connections": 0, "open": 0, "bytes": 0}
        self.files = []
        self.threads = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        import threading
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                path = os.path.join(self.dir, f"conn-{len(self.files):04d}")
                self.files.append(path)
                self.totals["open"] += 1
            t = threading.Thread(target=self.serve, args=(conn, path), daemon=True)
            t.start()
            self.threads.append(t)

    def serve(self, conn, path):
        buf = bytearray(1 << 20)
        with conn, open(path, "wb") as out:
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                out.write(memoryview(buf)[:n])
                with self.lock:
                    self.totals["bytes"] += n
        with self.lock:
            self.totals["open"] -= 1
            self.totals["connections"] += 1

    def stats(self):
        with self.lock:
            return dict(self.totals)

    def stop(self):
        self.lsock.close()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def segments_of(archive):
    """A shared chain's segments ({route}-{seq}.log) in order."""
    segments = []
    for f in files_under(archive):
        m = re.search(r"/bench-(\d+)\.log$", f)
        if m is None:
            raise RuntimeError(f"unexpected file in the archive: {f}")
        segments.append((int(m.group(1)), f))
    return [f for _, f in sorted(segments)]


def sha256_of(files):
    import hashlib
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def check_shipped(name, system, archive, capture, clients, nbytes):
    """The untimed run's checks: what reached the capture sink, compared with what was sent
    (and, shipping, with the archive); the archive alone: its size (raw) or its lines."""
    if capture is None:
        if system.framing != "lines":
            return "the archive's size"
        verify_shared(archive, clients, nbytes)
        return "every client's lines whole, in order, in the archive"
    files = list(capture.files)
    if isinstance(system, SplicedShipProxy):  # a connection per client: each one client's stream
        if len(files) != clients:
            raise RuntimeError(f"{name}: {len(files)} upstream connections, not {clients}")
        for path in files:
            with open(path, "rb") as fh:
                seed = int(fh.read(21)[4:20], 16)
            r = subprocess.run([LOADGEN, "verify-lines", "--lines", str(LINE), "--bytes",
                                str(nbytes), "--seed", str(seed), "--clients", "1", path],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{name}: upstream stream failed: {r.stderr.strip()}")
        return "each upstream connection one client's whole stream"
    if isinstance(system, SplicedShip):
        if sha256_of(files) != sha256_of(segments_of(archive)):
            raise RuntimeError(f"{name}: the upstream's bytes differ from the archive's")
        if len(files) != 1:
            raise RuntimeError(f"{name}: {len(files)} upstream connections, not 1")
        said = "the upstream's stream = the archive (SHA-256)"
        if system.framing != "lines":  # raw: lines of clients interleave at chunk boundaries
            return said
    # rsyslog's disk-assisted queue does not keep the order of the lines (they go to the disk
    # part while older ones are still in the memory part): whole and each once, in any order.
    ordered = isinstance(system, SplicedShip)
    r = subprocess.run([LOADGEN, "verify-lines", "--lines", str(LINE), "--bytes", str(nbytes),
                        "--seed", "1", "--clients", str(clients),
                        *([] if ordered else ["--unordered"]), *files],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: the upstream's stream failed: {r.stderr.strip()}")
    return ("the upstream's stream = the archive (SHA-256), every client's lines whole, in order"
            if ordered else "every client's lines whole, each once, in some order")


def run_ship(name, system, base_dir, clients, nbytes, check=False):
    """One run: clients send nbytes of lines each; it ends when every byte has arrived where the
    system puts it (the archive; the sink; shipping: both, and acknowledged). With `check`, an
    untimed run into a sink that keeps every byte, checked against what was sent."""
    archive = tempfile.mkdtemp(prefix="archive-", dir=base_dir)
    sink = None
    total = clients * nbytes
    try:
        if system.needs_sink():
            sink = CaptureSink(base_dir) if check else Sink(base_dir)
        to = system.start_ship(archive, sink.port if sink else 0)
        reported0 = host_reported_mib()
        cpu0 = tree_cpu(system.proc.pid)
        t0 = time.monotonic()
        system.send(to, clients, nbytes, lines=LINE)
        sent = time.monotonic() - t0
        at_sink = None
        if sink is not None:  # (shipping: the acknowledgement is taken after the sink has all)
            wait_for(lambda: sink.stats()["bytes"] >= total, 600, f"{name}: the sink's bytes")
            at_sink = time.monotonic() - t0
        wait_for(lambda: system.arrived(archive, sink, total), 600,
                 f"{system.name} to deliver every byte")
        wall = time.monotonic() - t0
        system.settle()
        cpu = tree_cpu(system.proc.pid) - cpu0
        copied = system.copy_bytes() if hasattr(system, "copy_bytes") else None
        counters = system.ship_counters() if hasattr(system, "ship_counters") else {}
        reported1 = host_reported_mib()
        system.stop()
        if isinstance(system, SplicedShip):
            size = sum(os.path.getsize(f) for f in files_under(archive))
            if size != total:
                raise RuntimeError(f"{name}: {size} bytes archived of {total}")
            if system.framing == "lines" and not check:
                verify_shared(archive, clients, nbytes)
        if sink is not None:
            if check:  # the connections end when the system stops
                wait_for(lambda: sink.stats()["open"] == 0, 30, f"{name}: the sink's connections")
            got = sink.stats()["bytes"]
            if got != total:
                raise RuntimeError(f"{name}: the sink got {got} bytes of {total}")
        if check:
            return check_shipped(name, system, archive, sink, clients, nbytes)
        gb = total / 1e9
        return {"gbps": gb / wall, "cpu_per_gb": cpu / gb, "wall": wall, "cpu": cpu,
                "send_seconds": sent, "at_sink_seconds": at_sink, "copy_fallback_bytes": copied,
                **counters,
                "host_reported_mib": None if reported0 is None else reported1 - reported0}
    finally:
        try:
            system.stop()
        except Exception:
            pass
        if sink is not None:
            sink.stop()
            if check:
                sink.remove()
        shutil.rmtree(archive, ignore_errors=True)


SHIP_CHECK_BYTES = 10_000_000  # per client, in the untimed check run of each system


def scenario_ship(args, clients=4, nbytes=500_000_000):
    """Archive + ship (a shipping route, shared chain, archive on tmpfs) to a sink on 127.0.0.1,
    against the same archive alone, spliced forwarding alone (a proxy route) to the same sink,
    and rsyslog forwarding (omfwd on a disk-assisted queue); the same lines for every system."""
    work = tempfile.mkdtemp(prefix="spliced-bench-", dir="/dev/shm")
    check_bytes = SHIP_CHECK_BYTES
    if args.quick:
        nbytes, check_bytes = max(nbytes // 100, 1_000_000), 1_000_000
    nbytes -= nbytes % LINE
    check_bytes -= check_bytes % LINE
    systems = lineup(args, [
        own("spliced ship lines", lambda **kw: SplicedShip(work, framing="lines", **kw)),
        own("spliced archive lines",
            lambda **kw: SplicedShip(work, framing="lines", ship=False, **kw)),
        own("spliced ship raw", lambda **kw: SplicedShip(work, framing="raw", **kw)),
        own("spliced archive raw", lambda **kw: SplicedShip(work, framing="raw", ship=False, **kw)),
        own("spliced forward", lambda **kw: SplicedShipProxy(work, **kw)),
        own("spliced ship lines workers 2",
            lambda **kw: SplicedShip(work, framing="lines", workers=2, **kw)),
        own("spliced archive lines workers 2",
            lambda **kw: SplicedShip(work, framing="lines", ship=False, workers=2, **kw)),
        ("rsyslog omfwd DA queue", lambda: RSyslogForward(work))])

    def run_one(name, system):
        if not args.quick:
            prefault_memory(clients * nbytes * 1.25 / 1e9 + 0.5)
        return run_ship(name, system, work, clients, nbytes)
    try:
        results = run_rounds(args, systems, run_one, show_throughput)
        for name, make in systems:  # untimed: the bytes the upstream got, checked
            said = run_ship(name, make(), work, clients, check_bytes, check=True)
            print(f"  verified {name} ({clients} x {check_bytes} B): {said}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"scenario": f"ship {clients} x {nbytes // 1_000_000} MB: archive into tmpfs and "
                        "forward to a sink",
            "results": {n: summarize(rs) for n, rs in results.items()},
            "ratios": ship_ratios(results)}


def ship_ratios(results):
    """The issue's targets, from the medians: shipping against the archive alone (the same
    framing) and against rsyslog's forwarding."""
    med = {n: statistics.median(r["gbps"] for r in rs) for n, rs in results.items() if rs}
    out = {}
    rsyslog = med.get("rsyslog omfwd DA queue")
    for framing in ("lines", "raw", "lines workers 2"):
        ship, alone = med.get(f"spliced ship {framing}"), med.get(f"spliced archive {framing}")
        if ship and alone:
            out[f"spliced ship {framing} / spliced archive {framing}"] = ship / alone
        if ship and rsyslog:
            out[f"spliced ship {framing} / rsyslog omfwd DA queue"] = ship / rsyslog
    return out


def rotated(systems, i):
    """Round i starts with a different system, so none always pays for going first."""
    k = i % len(systems)
    return systems[k:] + systems[:k]


REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def host_reported_mib():
    """MiB of freed memory this guest has handed back to its host so far (free page reporting),
    or None where the kernel does not say."""
    try:
        with open(REPORTED) as f:
            return int(f.read()) / 1024
    except (OSError, ValueError):
        return None


def prefault_memory(gigabytes):
    """Writes and deletes `gigabytes` in tmpfs. On a virtual machine with free page reporting
    (virtio-balloon), memory freed for a few seconds is handed back to the host, and touching it
    again costs a host page fault per page: writing 2 GiB into tmpfs measured 3.4 GB/s right after
    a free and 0.5 GB/s ten seconds after. Done right before each archive run, this hands the run
    memory the host still backs, whichever system goes first."""
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
    try:
        out = subprocess.run(["socat", "-V"], capture_output=True, text=True).stdout
    except OSError:  # not installed (--only-spliced does not install the peers)
        out = ""
    return next((l.strip() for l in out.splitlines() if "socat version" in l), "socat ?")


def versions(baseline=None):
    """Each program's version; with `baseline` (a spliced binary), also that one's."""
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    return {
        "spliced": first_line([SPLICED, "--version"]),
        "baseline": first_line([baseline, "--version"]) if baseline else None,
        "haproxy": first_line([tool("haproxy"), "-v"]),
        "nginx": first_line([tool("nginx"), "-v"]),
        "socat": socat_version(),
        "rsyslog": first_line([tool("rsyslogd"), "-v"]).split(" compiled")[0].strip(),
        "kernel": os.uname().release,
        "cpus": str(os.cpu_count()),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), "?"),
    }


BUDGET = (("sut_cores", "system under test"), ("loadgen_cores", "load generator"),
          ("sink_cores", "sink"), ("busy_cores", "whole machine busy"),
          ("softirq_cores", "of which softirq"))


def budget_table(sc):
    """Where the CPU went (cores, medians of the runs), for scenarios whose runs measured it."""
    rows = []
    for name, r in sc["results"].items():
        runs = [x for x in r.get("all", []) if "busy_cores" in x]
        if runs:
            cells = " | ".join(f"{statistics.median(x[k] for x in runs):.2f}" for k, _ in BUDGET)
            rows.append(f"| {name} | {cells} |")
    if not rows:
        return []
    return (["", "Where the CPU went, in cores (CPU-seconds per second of the timed run, "
             "medians):", "", "| system | " + " | ".join(label for _, label in BUDGET) + " |",
             "|---" * (len(BUDGET) + 1) + "|"] + rows)


def table(sc):
    """The markdown table of one scenario's medians, and where the CPU went when measured."""
    rows = main_table(sc)
    return rows + budget_table(sc) if sc.get("kind", "throughput") in ("throughput", "rate") \
        else rows


def main_table(sc):
    """The markdown table of one scenario's medians."""
    kind = sc.get("kind", "throughput")
    if kind == "idle":
        rows = ["| system | KiB of memory per connection | fds per connection |", "|---|---|---|"]
        for name, r in sc["results"].items():
            rows.append(f"| {name} | {r['kib_per_conn']:.2f} | {r['fds_per_conn']:.2f} |")
        return rows
    def spread(r, key, fmt):
        values = [x[key] for x in r.get("all", [])]
        return f"{min(values):{fmt}}–{max(values):{fmt}}" if values else "-"

    if kind == "latency":
        rows = ["| system | round trips/s | p50 µs | p99 µs | p99.9 µs (runs min–max) | max µs "
                "| proxy CPU-µs per round trip |", "|---|---|---|---|---|---|---|"]
        for name, r in sc["results"].items():
            rows.append(f"| {name} | {r['rt_per_s']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} "
                        f"| {r['p999_us']:.0f} ({spread(r, 'p999_us', '.0f')}) | "
                        f"{r['max_us']:.0f} | {r['cpu_us_per_rt']:.1f} |")
        return rows
    if kind == "cat":
        rows = ["| system | GB/s | runs (min–max) | CPU-s per GB | peak RSS MiB |",
                "|---|---|---|---|---|"]
        for name, r in sc["results"].items():
            rows.append(f"| {name} | {r['gbps']:.3f} | {spread(r, 'gbps', '.2f')} | "
                        f"{r['cpu_per_gb']:.3f} | {r['rss_mib']:.1f} |")
        return rows
    if kind == "syscalls":
        rows = ["| system | system calls per connection | the calls, per connection |",
                "|---|---|---|"]
        for name, r in sc["results"].items():
            calls = ", ".join(f"{k} {v:.2f}" for k, v in r["calls"].items())
            rows.append(f"| {name} | {r['syscalls_per_conn']:.2f} | {calls} |")
        return rows
    if kind == "udp":
        rows = ["| system | messages/s | runs (min–max) | CPU-µs per message | loss (median) |",
                "|---|---|---|---|---|"]
        for name, r in sc["results"].items():
            rows.append(f"| {name} | {r['msgs_per_s']:.0f} | {spread(r, 'msgs_per_s', '.0f')} "
                        f"| {r['cpu_us_per_msg']:.2f} | {r['loss'] * 100:.2f}% |")
        return rows
    if kind == "reload":
        rows = ["| system | steady GB/s | worst 100 ms window before the reloads | worst 100 ms "
                "window while reloading (runs min–max) | worst / steady | worst while reloading / "
                "worst before | longest stall of a stream, p50 / p99 (ms) | longest binary "
                "upgrade pause (ms, most in a run) | streams reset (most "
                "in a run) | bytes lost (most in a run) | old processes still serving (most seen) "
                "| upstream connections left open (most in a run) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in sc["results"].items():
            pause = "-" if r.get("upgrade_pause_ms") is None else f"{r['upgrade_pause_ms']:.1f}"
            rows.append(f"| {name} | {r['steady_gbps']:.2f} | {r['calm_worst_gbps']:.2f} | "
                        f"{r['worst_gbps']:.2f} ({spread(r, 'worst_gbps', '.2f')}) | "
                        f"{r['dip']:.2f} | {r['vs_calm']:.2f} | "
                        f"{r.get('stall_p50_ms', 0):.0f} / {r.get('stall_p99_ms', 0):.0f} | "
                        f"{pause} | "
                        f"{r['resets']} | {r['lost_bytes']} | "
                        f"{r['old_processes']} | {r['left_open']} |")
        return rows
    if kind == "octet":
        rows = ["| system | messages/s | runs (min–max) | GB/s | CPU-s per GB | CPU-µs per message "
                "| bytes copied / spliced (one run) |", "|---|---|---|---|---|---|---|"]
        for name, r in sc["results"].items():
            paths = ("-" if r.get("copied_bytes") is None
                     else f"{r['copied_bytes']:.0f} / {r['spliced_bytes']:.0f}")
            rows.append(f"| {name} | {r['msgs_per_s']:.0f} | {spread(r, 'msgs_per_s', '.0f')} | "
                        f"{r['gbps']:.3f} | {r['cpu_per_gb']:.3f} | {r['cpu_us_per_msg']:.2f} | "
                        f"{paths} |")
        if sc.get("ratios"):
            rows += ["", "| messages/s ratio of the medians | |", "|---|---|"]
            rows += [f"| {k} | {v:.2f}x |" for k, v in sc["ratios"].items()]
        return rows
    if kind == "rate":
        rows = ["| system | connections/s | runs (min–max) | CPU-µs per connection |",
                "|---|---|---|---|"]
        for name, r in sc["results"].items():
            rows.append(f"| {name} | {r['conns_per_s']:.0f} | {spread(r, 'conns_per_s', '.0f')} "
                        f"| {r['cpu_us_per_conn']:.1f} |")
        return rows
    rows = ["| system | GB/s | runs (min–max) | CPU-s per GB | GB per CPU-s | copy-fallback bytes |",
            "|---|---|---|---|---|---|"]
    for name, r in sc["results"].items():
        per = 1 / r["cpu_per_gb"] if r["cpu_per_gb"] > 0 else float("inf")
        copied = "-" if r.get("copy_fallback_bytes") is None else f"{r['copy_fallback_bytes']:.0f}"
        rows.append(f"| {name} | {r['gbps']:.3f} | {spread(r, 'gbps', '.2f')} | "
                    f"{r['cpu_per_gb']:.3f} | {per:.2f} | {copied} |")
    if sc.get("ratios"):  # GB/s of the medians
        rows += ["", "| GB/s ratio of the medians | |", "|---|---|"]
        rows += [f"| {k} | {v:.2f}x |" for k, v in sc["ratios"].items()]
    return rows


# What baseline_table compares, by kind of scenario: (label, key) of the speed and of the cost.
COMPARED = {"throughput": (("GB/s", "gbps"), ("CPU-s/GB", "cpu_per_gb")),
            "rate": (("conns/s", "conns_per_s"), ("CPU-µs/conn", "cpu_us_per_conn")),
            "udp": (("msgs/s", "msgs_per_s"), ("CPU-µs/msg", "cpu_us_per_msg")),
            "octet": (("msgs/s", "msgs_per_s"), ("CPU-µs/msg", "cpu_us_per_msg")),
            "idle": (("KiB/conn", "kib_per_conn"), ("fds/conn", "fds_per_conn")),
            "latency": (("rt/s", "rt_per_s"), ("CPU-µs/rt", "cpu_us_per_rt")),
            "syscalls": (("syscalls/conn", "syscalls_per_conn"),
                         ("syscalls/conn", "syscalls_per_conn")),
            "cat": (("GB/s", "gbps"), ("CPU-s/GB", "cpu_per_gb")),
            "reload": (("worst/steady", "dip"), ("steady GB/s", "steady_gbps"))}


def baseline_table(out):
    """The markdown table of every spliced system that has a baseline (--baseline), in every
    scenario: new/baseline of the medians of its speed and of its cost, and how far each one's
    runs spread (max - min, as % of its median), to tell a change from noise. No rows (an empty
    list) without baselines."""
    def ratio(new, base):
        return f"{new / base:.2f}x" if base else "-"

    def spread(r, key):  # none from one run: it is not "no noise"
        values = [x[key] for x in r.get("all", [])]
        if len(values) < 2 or not r[key]:
            return "-"
        return f"{(max(values) - min(values)) / r[key] * 100:.1f}%"

    rows = []
    for sc in out:
        (speed, skey), (cost, ckey) = COMPARED[sc.get("kind", "throughput")]
        for name, new in sc["results"].items():
            base = sc["results"].get(name + BASELINE)
            if name.endswith(BASELINE) or base is None:
                continue
            rows.append(f"| {sc['scenario']} | {name} | {speed} {ratio(new[skey], base[skey])} | "
                        f"{cost} {ratio(new[ckey], base[ckey])} | "
                        f"{spread(new, skey)} / {spread(base, skey)} |")
    if not rows:
        return []
    return ["| scenario | system | speed, new/baseline | cost, new/baseline | spread of the speed "
            "over the runs, new / baseline |", "|---|---|---|---|---|"] + rows


SETTINGS = [
    ("spliced", "one event loop; 1 MiB pipes; log level warn. Archive: `layout: per_connection` "
     "(a byte-exact chain per client), segments rotating at 64 MiB. `spliced lines`: "
     "`layout: shared` + `framing: lines`, one chain for all clients with every line whole, as "
     "rsyslog writes. `spliced+zstd`: per_connection with `compress: zstd`."),
    ("HAProxy", "`mode tcp`, `nbthread 1` (one thread, as spliced's one loop), "
     "`tune.pipesize 1048576`, `maxconn 7000` (the most 20,000 fds allow), logging to stderr at "
     "level err only; run with and without `option splice-auto`."),
    ("nginx", "`stream` proxy, `worker_processes 1`, `proxy_buffer_size 256k`, "
     "`proxy_half_close on` (a client's FIN is passed on, as the others do), "
     "`worker_connections 12000`, `error_log` at level error, no access log."),
    ("socat", "`-b 262144`; `TCP-LISTEN,fork` (a process per connection) to `TCP:` when forwarding "
     "and to `OPEN:file,append` when archiving (only its byte total is checked: concurrent "
     "children append whatever each read returned, so lines of different clients can be cut "
     "apart)."),
    ("rsyslog", "`imtcp` (maxSessions 4000) to `omfile` with the raw template `%rawmsg%\\n` and "
     "`ioBufferSize 256k`, peer DNS lookups off, a 100,000-message main queue dequeued 1,024 at "
     "a time by one worker (so each client's lines stay in order). Over UDP: `imudp` with "
     "`rcvbufSize 4m` into the same action."),
]


NOTES_HEADING = "## Reading these figures"


def write_markdown(path, out, args):
    v = versions(baseline_binary(args) if args.baseline else None)
    ran = {name for sc in out for name in sc["results"]}
    baselines = list(dict.fromkeys(name for sc in out for name in sc["results"]
                                   if name.endswith(BASELINE)))  # in order, each once

    def peer_ran(name):  # only the peers this run had (--only-spliced has none)
        return any(n.startswith(name.lower()) for n in ran)
    options = f"--runs {args.runs}"
    if args.compress:
        options += " --compress"
    if args.only_spliced:
        options += " --only-spliced"
    if baselines:  # (--from-json does not know the directory)
        options += f" --baseline {args.baseline or 'DIR'}"
    programs = [v["spliced"] + (f" (baseline: {v['baseline']})" if baselines and v["baseline"]
                                else "")]
    programs += [v[k] for k in ["haproxy", "nginx", "socat", "rsyslog"] if peer_ran(k)]
    lines = ["# Benchmarks", "",
             f"Generated by `tools/bench/run.py {options}` on "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}: {v['cpus']} x {v['cpu']}, "
             f"Linux {v['kernel']}. {'; '.join(programs)}.", "",
             "Each figure is the median of the runs, the systems alternating run by run (each "
             "round starting with a different one) after one discarded warm-up round, on one "
             "machine, so ratios within a table are what to read. GB/s is wall-clock (first connect to the last byte delivered: for "
             "archives, in files; for forwarding, at the sink); CPU-s per GB is the user+system "
             "time of the system under test (its whole process tree, children included) per "
             "10^9 bytes. The load generator and the sink run on the same 2 cores. Every byte is "
             "verified: archives line by line against what each client sent (each per-connection "
             "chain must be one client's whole stream), forwarded streams by the sink's byte "
             "and connection totals in the timed runs and byte for byte (a sink that reads and "
             "compares) in one more, untimed, run per system. Short connections are counted "
             "at the sink and their answers checked byte for byte by the clients.", "",
             f"The archive scenarios send text: lines of {LINE} bytes starting with a syslog "
             "priority, as a log shipper would. The forward scenarios send a binary pattern to "
             "a sink that splices into /dev/null. Idle: each connection sends 64 bytes through "
             "the proxy and is then held open; memory is the growth of the proxy's proportional "
             "set size (Pss, all its processes) over its size before, per connection (kernel "
             "socket memory is not in it). Connection rate: 32 clients at a time connect, send "
             "64 bytes, shut down their side, read the sink's 64-byte answer to EOF and close.",
             "", "This machine is a virtual machine whose guest hands memory freed for a few "
             "seconds back to its host (virtio-balloon free page reporting); touching such "
             "memory again costs a host page fault per page. Writing 2 GiB into tmpfs ran at 3.4 "
             "GB/s right after a free and at 0.5 GB/s ten seconds after one. Every archive run "
             "allocates gigabytes of page cache, so before each one the driver writes and frees "
             "1.25 times the run's bytes in tmpfs, for every system alike; without that, runs "
             "were bimodal (about 2.5 or 1.3 GB/s for the same system). Each run's JSON records "
             "how much memory was handed back during it (`host_reported_mib`).",
             "", "## Systems and settings", ""]
    lines += [f"- **{name}**: {text}" for name, text in SETTINGS if peer_ran(name)]
    if baselines:
        lines.append(f"- {', '.join(f'**{name}**' for name in baselines)}: the same settings, "
                     "run with the baseline build's binary"
                     f"{f' (`{args.baseline}/spliced`)' if args.baseline else ''}.")
    lines.append("")
    for sc in out:
        lines += [f"## {sc['scenario']}", ""] + table(sc) + [""]
    if baselines:
        lines += ["## new build against the baseline", "",
                  "Speed is GB/s, connections per second or (idle) KiB per connection; cost is "
                  "CPU-s per GB, CPU-µs per connection or (idle) fds per connection. A ratio "
                  "within the spread of the runs is noise.", ""] + baseline_table(out) + [""]
    lines += ["![GB/s, connections per second and memory per connection](BENCHMARKS.png)", ""]
    # The hand-written reading of the figures (from its heading on) is kept across runs.
    notes = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        k = old.find(NOTES_HEADING)
        notes = old[k:] if k >= 0 else ""
    with open(path, "w") as f:
        f.write("\n".join(lines) + ("\n" + notes if notes else ""))


def plot(png, out):
    """One PNG (gnuplot): GB/s of the archive scenarios and of the forward scenarios, clustered by
    scenario; below them the pipe-size study, the connection rate and the memory per idle
    connection."""
    if shutil.which("gnuplot") is None:
        ensure_packages(["gnuplot-nox"])
    files = []

    def data(rows):
        path = f"{png}.{len(files)}.dat"
        with open(path, "w") as f:
            f.write("\n".join(rows) + "\n")
        files.append(path)
        return path

    def clustered(title, scenarios, value, ylabel):
        systems = []
        for sc in scenarios:
            systems += [n for n in sc["results"] if n not in systems]
        rows = ["scenario " + " ".join(f'"{n}"' for n in systems)]
        for sc in scenarios:
            label = sc["scenario"].replace("pipe-size study: ", "")
            cells = [f'"{label}"']
            for n in systems:
                r = sc["results"].get(n)
                cells.append(f"{r[value]:.3f}" if r else "-")
            rows.append(" ".join(cells))
        return (title, ylabel, data(rows), systems)

    def kind(k, prefix=""):
        return [sc for sc in out if sc.get("kind", "throughput") == k
                and sc["scenario"].startswith(prefix)]

    top = [p for p in [clustered("archive: until every byte is in files", kind("throughput", "archive"),
                                 "gbps", "GB/s (median)"),
                       clustered("forward through the proxy", kind("throughput", "forward"),
                                 "gbps", "GB/s (median)")] if p[3]]
    bottom = [p for p in [clustered("spliced: pipe size, and splice against copying",
                                    kind("throughput", "pipe-size"), "gbps", "GB/s (median)"),
                          clustered("short connections through the proxy", kind("rate"),
                                    "conns_per_s", "connections per second"),
                          clustered("idle proxied connections", kind("idle"), "kib_per_conn",
                                    "KiB of memory per connection")] if p[3]]
    script = ['set terminal pngcairo size 1400,1000 font ",10"', f'set output "{png}"',
              "set multiplot", "set style data histogram", "set style histogram clustered gap 1",
              "set style fill solid 0.85 border -1", 'set datafile missing "-"', "set grid ytics",
              "set yrange [0:*]", "set offsets 0, 0, graph 0.3, 0",
              'set key top right font ",9" samplen 2', "set xtics rotate by -12 font \",9\""]
    # One colour per system in every panel.
    colours = {"spliced": "#8e3bd1", "spliced lines": "#c39be8", "spliced+zstd": "#5b1f8a",
               "rsyslog": "#2a9d8f", "socat": "#e9a23b", "haproxy+splice": "#3a7bd5",
               "haproxy": "#9ec3f0", "nginx": "#3d3d3d", "spliced pipes 64KiB": "#d9c3ef",
               "spliced pipes 256KiB": "#b58ae0", "spliced pipes 1MiB": "#8e3bd1",
               "spliced copy path": "#e76f51", "spliced workers 2": "#6a1fb0",
               "spliced lines workers 2": "#a77bd6", "haproxy+splice nbthread 2": "#1f5fb8",
               "haproxy nbthread 2": "#7aa9e6", "nginx 2 workers": "#777777"}
    for panels, y0, h in [(top, 0.45, 0.55), (bottom, 0, 0.45)]:
        for k, (title, ylabel, path, systems) in enumerate(panels):
            # A baseline (--baseline) has its system's colour, hatched.
            bars = [f'"{path}" using {i + 2}{":xtic(1)" if i == 0 else ""} '
                    f'title columnheader({i + 2}) '
                    f'lc rgb "{colours.get(n.removesuffix(BASELINE), "#999999")}"'
                    f'{" fs pattern 4 border -1" if n.endswith(BASELINE) else ""}'
                    for i, n in enumerate(systems)]
            script += [f"set size {1 / len(panels)},{h}", f"set origin {k / len(panels)},{y0}",
                       f'set title "{title}"', f'set ylabel "{ylabel}"', "plot " + ", ".join(bars)]
    script.append("unset multiplot")
    try:
        subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)
    finally:
        for f in files:
            os.unlink(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 run (CI smoke test)")
    ap.add_argument("--scenario", action="append",
                    choices=["archive-tmpfs", "archive-disk", "archive-1000x1", "forward-4x500",
                             "forward-100x20", "idle", "rate", "syscalls", "latency",
                             "study", "cat", "udp", "udp-drain", "ship-4x500", "octet-4x500",
                             "reload"])
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--markdown", help="write the tables here (and a PNG chart beside it)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the discarded first round")
    ap.add_argument("--build", metavar="DIR",
                    help="use the spliced and spliced-loadgen already built in DIR (as tools/"
                         "build.sh's build/test) instead of building Release")
    ap.add_argument("--compress", action="store_true",
                    help="also run spliced with compress: zstd in the archive scenarios")
    ap.add_argument("--manifest", action="store_true",
                    help="also run spliced with each archive.manifest.hash (none, xxh3, sha256) "
                         "in the archive scenarios, each run ending once every segment is hashed "
                         "and recorded")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run every spliced system with DIR/spliced (another build, e.g. "
                         "before a change), named with \"%s\" after it, alternating with the "
                         "others, and print new/baseline ratios at the end; the load generator "
                         "stays --build's" % BASELINE.strip())
    ap.add_argument("--only-spliced", action="store_true",
                    help="run no peer (HAProxy, nginx, socat, rsyslog), nor install them: only "
                         "spliced (and its --baseline)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="run nothing: write --markdown (and its chart) from a --json file")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            out = json.load(f)
        first = next(iter(out[0]["results"].values()))
        args.runs = first["runs"]
        args.compress = any("spliced+zstd" in sc["results"] for sc in out)
        args.manifest = any("spliced manifest xxh3" in sc["results"] for sc in out)
        args.only_spliced = all(n.startswith("spliced") for sc in out for n in sc["results"])
        if args.markdown:
            write_markdown(args.markdown, out, args)
            plot(os.path.splitext(args.markdown)[0] + ".png", out)
        return
    if args.baseline and not os.access(baseline_binary(args), os.X_OK):
        ap.error(f"--baseline {args.baseline}: no executable {baseline_binary(args)}")
    if args.quick:
        args.runs, args.warmup = 1, False
    if not args.only_spliced:
        ensure_packages(["socat", "haproxy", "nginx-light", "libnginx-mod-stream", "rsyslog"])
    if args.build:
        global SPLICED, LOADGEN
        SPLICED = os.path.join(os.path.abspath(args.build), "spliced")
        LOADGEN = os.path.join(os.path.abspath(args.build), "tools", "bench", "spliced-loadgen")
    else:
        build()
    if not args.quick:
        prefault_memory(8)
    out = []
    for sc in args.scenario or ["archive-tmpfs", "archive-disk", "archive-1000x1",
                                "forward-4x500", "forward-100x20", "idle", "rate", "syscalls",
                                "latency", "study", "udp", "udp-drain", "ship-4x500",
                                "octet-4x500", "reload"]:
        print(f"scenario {sc}", file=sys.stderr)
        if sc == "archive-1000x1":
            out.append(scenario_archive(args, "tmpfs", 1000, 1_000_000))
        elif sc == "idle":
            out.append(scenario_idle(args))
        elif sc == "rate":
            out.append(scenario_rate(args))
        elif sc == "syscalls":
            out.append(scenario_syscalls(args))
        elif sc == "cat":
            out += scenario_cat(args)
        elif sc == "udp":
            out.append(scenario_udp(args))
        elif sc == "udp-drain":
            out.append(scenario_udp_drain(args))
        elif sc == "ship-4x500":
            out.append(scenario_ship(args))
        elif sc == "reload":
            out.append(scenario_reload(args))
        elif sc == "octet-4x500":
            out += scenario_octet(args)
        elif sc == "latency":
            for clients, size in [(1, 64), (16, 64), (1, 16384), (16, 16384)]:
                out.append(scenario_latency(args, clients, size))
        elif sc == "study":
            out.append(scenario_forward(args, 4, 500_000_000, study=True))
        elif sc.startswith("archive-"):
            out.append(scenario_archive(args, sc.split("-")[1]))
        else:
            clients, mb = sc.split("-")[1].split("x")
            out.append(scenario_forward(args, int(clients), int(mb) * 1_000_000))
    for sc in out:
        print(f"\n{sc['scenario']} (median of {args.runs})")
        print("\n".join(table(sc)))
    if args.baseline:
        print(f"\nnew ({SPLICED}) against the baseline ({baseline_binary(args)}): ratios of the "
              f"medians of {args.runs} runs")
        print("\n".join(baseline_table(out)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.markdown:
        write_markdown(args.markdown, out, args)
        plot(os.path.splitext(args.markdown)[0] + ".png", out)


if __name__ == "__main__":
    main()
