"""Upload throughput through the proxy, against going direct and against a plain Node peer.

One run, one client (curl, streaming a file with -T, so the client is never the limit), a
1 GiB body over loopback to:

  direct  the emulator's /v2/upload in sink mode (counts and hashes, keeps nothing)
  peer    the integration guide's upload route as a Node streaming passthrough
          (../shared/peers/seed_upload_route.mjs) in front of the same emulator
  ours    the real service process (uvicorn, key auth, upload recorded in Postgres)
          in front of the same emulator

Best of --runs each, interleaved so that noise hits all three alike. Then a 2 GiB body
through the proxy while /proc/<pid>/status is sampled: the proxy's memory must stay flat.

Prints: direct_mb_s, peer_mb_s, ours_mb_s, ratio (ours/direct, target >= 0.85),
peer_ratio (ours/peer, target >= 1.0); ours/peer/sink/client_cpu_s_per_gib (CPU seconds
each process spends per GiB relayed: steadier than rates on a shared machine);
ours_page_faults_per_gib (fresh memory the proxy touches: allocator churn); rss_mb (peak
VmRSS while 2 GiB pass, target <= 100), rss_start_mb (the idle process), rss_growth_mb
(peak - idle), hwm_mb, rss_anon_mb (private memory only) and rss_drift_second_half_mb
(flat: ~0). Exits 1 when it could not measure.

With --tls the emulator is served over HTTPS (uvicorn's own TLS, a certificate from a
trustme test CA), as AssemblyAI's hosts are: curl (--cacert), the Node peer
(NODE_EXTRA_CA_CERTS) and the service (UPSTREAM_CA_FILE) all trust that CA. Every
connection into the emulator is then TLS (curl's direct one, both relays' upstream legs);
curl's legs to the peer and to the service stay plain HTTP, as behind a TLS-terminating
load balancer. Prints `tls: 1` besides the same lines.

  .venv/bin/python bench/upload_throughput.py [--gib 1] [--runs 3] [--rss-gib 2] [--tls]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import (  # noqa: E402
    EMULATOR_KEY,
    Proc,
    create_key_in,
    free_port,
    run_emulator,
    run_process,
    run_service,
)
from tests.pg import create_database, drop_database, postgres_server  # noqa: E402

PEER = ROOT.parent / "shared" / "peers" / "seed_upload_route.mjs"
MIB = 1024 * 1024


def make_file(directory: Path, size: int) -> Path:
    path = directory / f"body-{size}.bin"
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(block)
        out.write(block[: size % MIB])
    return path


def make_tls(directory: Path) -> tuple[Path, Path]:
    """A test CA (trustme) and the emulator's certificate for 127.0.0.1 signed by it:
    (the CA's PEM, the emulator's key and certificate chain in one PEM)."""
    import trustme  # a dev dependency, needed only here

    authority = trustme.CA()
    ca, cert = directory / "ca.pem", directory / "emulator.pem"
    authority.cert_pem.write_to_path(str(ca))
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    return ca, cert


CLIENT_CPU = [0.0]  # CPU seconds spent by curl so far


def curl_upload(url: str, path: Path, key: str, cacert: Path | None = None) -> float:
    """Seconds to POST the file (curl -T streams it with a Content-Length); `cacert` for
    an https:// URL whose certificate comes from a test CA."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            "curl",
            *(("--cacert", str(cacert)) if cacert is not None else ()),
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            "-T",
            str(path),
            "-H",
            f"Authorization: {key}",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect:",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{time_total} %{size_upload} %{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # curl is the only child reaped
    CLIENT_CPU[0] += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"curl to {url} failed: {result.stderr or result.stdout}")
    seconds, uploaded, code = lines[-1].split()
    body = "\n".join(lines[:-1])
    if code != "200" or int(uploaded) != path.stat().st_size or "upload_url" not in body:
        raise RuntimeError(f"upload to {url} answered {code}: {body[:300]}")
    return float(seconds)


@contextlib.contextmanager
def run_peer(upstream: str, ca: Path | None = None) -> Iterator[Proc]:
    port = free_port()
    env = {"UPSTREAM": upstream, "KEY": EMULATOR_KEY, "PORT": str(port)}
    if ca is not None:  # Node adds these CAs to its own bundle (fetch included)
        env["NODE_EXTRA_CA_CERTS"] = str(ca)
    with run_process("peer", ["node", str(PEER)], env, port) as proc:
        yield proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def page_faults(pid: int) -> int:
    """Minor page faults of a process so far (fresh memory being touched)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[7])


class RssSampler:
    """Samples VmRSS and VmHWM of one process every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self.anon: list[int] = []
        self.hwm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> tuple[int, int, int]:
        """VmRSS, VmHWM and RssAnon (the process's private memory), in bytes."""
        values = {"VmRSS:": 0, "VmHWM:": 0, "RssAnon:": 0}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                name = line.split(maxsplit=1)[0]
                if name in values:
                    values[name] = int(line.split()[1]) * 1024
        return values["VmRSS:"], values["VmHWM:"], values["RssAnon:"]

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, hwm, anon = self.read()
            self.samples.append(rss)
            self.anon.append(anon)
            self.hwm = max(self.hwm, hwm)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="body size for the rates")
    parser.add_argument("--runs", type=int, default=3, help="best of this many, each target")
    parser.add_argument("--rss-gib", type=float, default=2.0, help="body size for rss_mb")
    parser.add_argument(
        "--tls", action="store_true", help="serve the emulator over HTTPS (a trustme test CA)"
    )
    args = parser.parse_args()
    if shutil.which("curl") is None or shutil.which("node") is None or not PEER.exists():
        print("error: needs curl, node and ../shared/peers/seed_upload_route.mjs", file=sys.stderr)
        return 1
    size = int(args.gib * 1024 * MIB)
    rss_size = int(args.rss_gib * 1024 * MIB)
    best: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aaip-bench-")))
        server = stack.enter_context(postgres_server())
        database_url = create_database(server)
        stack.callback(drop_database, server, database_url)
        key = create_key_in(database_url, ["transcripts"], name="bench")
        ca, cert = make_tls(tmp) if args.tls else (None, None)
        emulator = stack.enter_context(
            run_emulator({"EMULATOR_UPLOAD_SINK": "true", "EMULATOR_TEST_MODE": "false"}, tls=cert)
        )
        peer = stack.enter_context(run_peer(emulator.url, ca))
        service_env = {
            "MIGRATE_ON_START": "false",
            "LOG_LEVEL": "WARNING",
            "RECONCILER_ENABLED": "false",
            "MAX_UPLOAD_BYTES": str(max(size, rss_size) + 1),
        }
        if ca is not None:
            service_env["UPSTREAM_CA_FILE"] = str(ca)
        service = stack.enter_context(run_service(database_url, emulator.url, service_env))
        body = make_file(tmp, size)
        targets = {
            "direct": (f"{emulator.url}/v2/upload", EMULATOR_KEY, ca),
            "peer": (f"{peer.url}/v2/upload", EMULATOR_KEY, None),
            "ours": (f"{service.url}/v2/upload", key, None),
        }
        for url, auth, cacert in targets.values():  # warm-up: pools, page cache
            curl_upload(url, make_file(tmp, 8 * MIB), auth, cacert)
        relays = {"peer": peer, "ours": service}
        cpu: dict[str, float] = {"sink": 0.0, "peer": 0.0, "ours": 0.0}
        faults = 0
        client_start = CLIENT_CPU[0]
        for _ in range(args.runs):
            for name, (url, auth, cacert) in targets.items():
                before = {n: cpu_seconds(p.process.pid) for n, p in relays.items()}
                sink_before = cpu_seconds(emulator.process.pid)
                faults_before = page_faults(service.process.pid)
                seconds = curl_upload(url, body, auth, cacert)
                if name == "ours":
                    faults += page_faults(service.process.pid) - faults_before
                best[name] = max(best.get(name, 0.0), size / seconds / MIB)
                cpu["sink"] += cpu_seconds(emulator.process.pid) - sink_before
                if name in relays:
                    cpu[name] += cpu_seconds(relays[name].process.pid) - before[name]
        body.unlink()
        big = make_file(tmp, rss_size)
        sampler = RssSampler(service.process.pid)
        start_rss, _, start_anon = sampler.read()
        with sampler:
            curl_upload(f"{service.url}/v2/upload", big, key)
        peak = max(sampler.samples, default=start_rss)
        print(f"body_mib: {size // MIB}")
        for name in ("direct", "peer", "ours"):
            print(f"{name}_mb_s: {best[name]:.1f}")
        print(f"ratio: {best['ours'] / best['direct']:.3f}")
        # CPU seconds per GiB relayed: what each relay costs, whatever the neighbours do.
        gib_relayed = args.runs * size / (1024 * MIB)
        print(f"ours_cpu_s_per_gib: {cpu['ours'] / gib_relayed:.2f}")
        print(f"peer_cpu_s_per_gib: {cpu['peer'] / gib_relayed:.2f}")
        print(f"sink_cpu_s_per_gib: {cpu['sink'] / (3 * gib_relayed):.2f}")
        # The client, to show it is not the limit (curl, alike for the three paths).
        print(f"client_cpu_s_per_gib: {(CLIENT_CPU[0] - client_start) / (3 * gib_relayed):.2f}")
        print(f"ours_page_faults_per_gib: {faults / gib_relayed:.0f}")
        print(f"peer_ratio: {best['ours'] / best['peer']:.3f}")
        print(f"rss_body_mib: {rss_size // MIB}")
        print(f"rss_mb: {peak / MIB:.1f}")
        print(f"rss_start_mb: {start_rss / MIB:.1f}")
        print(f"rss_growth_mb: {(peak - start_rss) / MIB:.1f}")
        print(f"hwm_mb: {sampler.hwm / MIB:.1f}")
        print(f"rss_anon_mb: {max(sampler.anon, default=start_anon) / MIB:.1f}")
        # Flat: the second half of the body costs no more memory than the first.
        half = len(sampler.samples) // 2
        if half:
            drift = max(sampler.samples[half:]) - max(sampler.samples[:half])
            print(f"rss_drift_second_half_mb: {drift / MIB:.1f}")
        print(f"rss_samples: {len(sampler.samples)}")
        print(f"runs: {json.dumps(args.runs)}")
        if args.tls:
            print("tls: 1")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 — report and exit non-zero: nothing was measured
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
