"""How faithfully does the browser client capture the microphone? Measured in real Chromium.

Headless Chromium plays espeak-ng speech (resampled to 48 kHz by sox) as a fake microphone
into the real page served by the service; the page streams to the emulator, whose inspection
endpoint hands back exactly the PCM and frame timings it received. For 16 kHz and 24 kHz
captures (TOKEN_STREAMING_SAMPLE_RATE), prints:

  snr_db_<rate>            the received PCM against sox's resampling of what the page's
                           microphone delivered (the capture worklet's tap): the page's
                           resampling, framing and transport, and nothing else
  file_snr_db_<rate>       the received PCM against sox's resampling of the speech file;
                           lower than snr_db only when the fake microphone itself glitched
                           (on a starved machine Chromium repeats or drops 10 ms buffers)
  baseline_snr_db_<rate>   a linear-interpolation resampler (what naive browser capture
                           code does) from the context rate, on the same speech, same run
  frame_ms_{min,mean,max}_<rate>, frames_<rate>
  pacing_ratio_<rate>      audio seconds sent / wall seconds elapsed (1.0 = real time)
  max_lead_ms_<rate>       how far the audio ever ran ahead of the wall clock since the
                           first frame
  max_burst_ms_<rate>      the most audio any stretch of frames carried beyond the time it
                           took, on arrival (what a leaky-bucket real-time check sees;
                           the emulator refuses beyond 2000)
  send_burst_ms_<rate>     the same at the page's ws.send() calls (its pacer allows 300)
  context_rate             the AudioContext's rate (the resampler's input)

With --relay the service runs with BROWSER_LIVE_MODE=relay: the page streams to the
service's /v3/ws relay (a relay token), which relays to the emulator; the same figures are
taken from the emulator's received PCM, so they include the relay. The run checks that the
page's WebSocket really went to the service and prints `relay: 1`.

The figures are taken from the emulator session whose id the page got in `Begin`, once it
has ended; the run stops (exit 1) unless that session received exactly the frames the page
sent (count, sizes, order, PCM bytes) with no frame of speech delivered twice — a lost,
doubled or reordered frame would otherwise show only as a low SNR.

Exits 1 when it could not measure.
  .venv/bin/python bench/capture_fidelity.py [--seconds 6] [--relay]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.audio_fidelity import (  # noqa: E402
    make_speech,
    pcm16_to_float,
    read_tap,
    read_wav,
    resample,
    snr_against,
)
from tests.live import create_key_in, run_emulator, run_service  # noqa: E402
from tests.pg import create_database, drop_database, postgres_server  # noqa: E402

SCOPES = ["transcripts", "tokens:streaming", "tokens:agents"]


def linear_baseline(raw: Path, reference: np.ndarray, context_rate: int, rate: int) -> float:
    """SNR against sox of what naive worklet code does: linear interpolation (no
    anti-aliasing filter) from the AudioContext's rate to the target rate. The speech at the
    context rate is sox's own resampling, so only the naive step is measured."""
    at_context = raw.with_name(f"speech-ctx-{context_rate}.wav")
    if not at_context.exists():
        subprocess.run(
            ["sox", str(raw), "-r", str(context_rate), "-b", "16", str(at_context), "rate", "-v"],
            check=True,
        )
    _, x = read_wav(at_context)
    positions = np.arange(int(len(x) * rate / context_rate)) * (context_rate / rate)
    naive = np.interp(positions, np.arange(len(x)), x)
    n = min(len(naive), len(reference))
    noise = np.sum((naive[:n] - reference[:n]) ** 2)
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / noise))


def capture(
    browser: Any, service_url: str, key: str, emulator_url: str, seconds: float, relay: bool
) -> Any:
    context = browser.new_context(base_url=service_url)
    page = context.new_page()
    sockets: list[str] = []  # the URL of every WebSocket the page opens
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        page.goto("/")
        page.fill("#signin-key", key)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        before = {
            s["id"] for s in httpx.get(f"{emulator_url}/_emulator/sessions?frames=false").json()
        }
        page.evaluate("window.__aaiTap = true")  # keep what the microphone delivered
        page.click("#stt-start")
        frames = int(seconds * 10)
        page.wait_for_function(
            f"() => window.__aaiStats.stt.framesSent >= {frames}", timeout=(seconds + 20) * 1000
        )
        page.click("#stt-stop")
        page.wait_for_function("() => window.__aaiStats.stt.state === 'Stopped'", timeout=10_000)
        context_rate = page.evaluate("() => window.__aaiStats.stt.contextRate")
        send_log = page.evaluate("() => window.__aaiStats.stt.sendLog")
        # The session the page streamed into: the id of the `Begin` it received (the relay
        # passes upstream's `Begin` through, so it is the emulator's id in both modes).
        page_session = page.evaluate("() => window.__aaiStats.stt.sessionId")
        page_sessions = page.evaluate("() => window.__aaiStats.stt.sessions")
        tap = read_tap(page)
    finally:
        context.close()
    expected = service_url.replace("http://", "ws://", 1) if relay else emulator_url
    expected = expected.replace("http://", "ws://", 1) + "/v3/ws"
    if not any(url.startswith(expected) for url in sockets):
        raise RuntimeError(f"the page streamed to {sockets}, not to {expected}")
    if page_sessions != 1 or len(sockets) != 1:
        raise RuntimeError(f"the page opened {len(sockets)} sockets ({page_sessions} sessions)")
    sessions = httpx.get(f"{emulator_url}/_emulator/sessions?frames=false").json()
    fresh = [s for s in sessions if s["id"] not in before and s["product"] == "streaming"]
    if [s["id"] for s in fresh] != [page_session]:
        raise RuntimeError(
            f"the page's session is {page_session!r}; the emulator saw {[s['id'] for s in fresh]}"
        )
    record = session_record(emulator_url, page_session)
    pcm = httpx.get(f"{emulator_url}/_emulator/sessions/{page_session}/pcm").content
    check_frames(record, pcm, send_log)
    return record, pcm, context_rate, send_log, tap


def session_record(emulator_url: str, session_id: str, timeout_s: float = 10) -> Any:
    """The emulator's record of the session once it has ended (all its audio is in)."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = httpx.get(f"{emulator_url}/_emulator/sessions/{session_id}").json()
        if record.get("ended_at") is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def check_frames(record: dict[str, Any], pcm: bytes, send_log: list[list[float]]) -> None:
    """The emulator received exactly the frames the page sent: as many, in the same sizes and
    order, and the PCM is their concatenation. Anything else is not a capture measurement."""
    received = [int(f["size"]) for f in record["frames"] if f["kind"] == "binary"]
    sent = [int(b) for _, b in send_log]
    if received != sent:
        raise RuntimeError(
            f"the page sent {len(sent)} frames ({sum(sent)} bytes); the emulator received "
            f"{len(received)} ({sum(received)} bytes)"
        )
    if len(pcm) != sum(received):
        raise RuntimeError(f"the emulator holds {len(pcm)} PCM bytes of {sum(received)} received")
    # Two frames of speech with the very same bytes: a frame delivered twice (and, the count
    # being right, another one lost) somewhere between the page and the emulator.
    seen: dict[bytes, int] = {}
    offset = 0
    for i, size in enumerate(received):
        frame = pcm[offset : offset + size]
        offset += size
        if not any(frame):
            continue  # digital silence repeats naturally
        if frame in seen:
            raise RuntimeError(f"frame {i} arrived with the same bytes as frame {seen[frame]}")
        seen[frame] = i


def max_burst(times_s: list[float], durations_ms: list[float]) -> float:
    """Every stretch of frames i..j: the audio in it beyond the wall time it took."""
    return max(
        sum(durations_ms[i : j + 1]) / 1000 - (times_s[j] - times_s[i]) - durations_ms[i] / 1000
        for j in range(len(times_s))
        for i in range(j + 1)
    )


def measure(
    record: dict[str, Any],
    pcm: bytes,
    speech: dict[str, Path],
    rate: int,
    context_rate: int,
    tap: np.ndarray,
) -> dict[str, float]:
    audio = [f for f in record["frames"] if f["kind"] == "binary"]
    if len(audio) < 10:
        raise RuntimeError(f"only {len(audio)} audio frames arrived")
    ms = np.array([f["size"] / 2 / rate * 1000 for f in audio])
    at = np.array([f["at"] for f in audio])
    sent = np.cumsum(ms) / 1000
    lead = sent - (at - at[0]) - ms / 1000
    burst = max_burst(list(at), list(ms))
    wall = at[-1] - at[0] + ms[-1] / 1000
    _, reference = read_wav(speech[str(rate)])
    captured = pcm16_to_float(pcm[: -audio[-1]["size"]])
    fidelity = snr_against(captured, resample(tap, context_rate, rate), rate)
    from_file = snr_against(captured, reference, rate)
    return {
        f"snr_db_{rate}": round(fidelity.snr_db, 2),
        f"file_snr_db_{rate}": round(from_file.snr_db, 2),
        f"baseline_snr_db_{rate}": round(
            linear_baseline(
                speech["48000"].with_name("speech-raw.wav"), reference, context_rate, rate
            ),
            2,
        ),
        f"gain_{rate}": round(fidelity.gain, 4),
        f"frames_{rate}": len(audio),
        f"frame_ms_min_{rate}": round(float(ms.min()), 2),
        f"frame_ms_mean_{rate}": round(float(ms.mean()), 2),
        f"frame_ms_max_{rate}": round(float(ms.max()), 2),
        f"interarrival_ms_p99_{rate}": round(float(np.percentile(np.diff(at) * 1000, 99)), 2),
        f"pacing_ratio_{rate}": round(float(sent[-1] / wall), 4),
        f"max_lead_ms_{rate}": round(float(lead.max() * 1000), 2),
        f"max_burst_ms_{rate}": round(burst * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--relay", action="store_true", help="stream through the service's /v3/ws relay"
    )
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium is not installed", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="aaip-capture-") as tmp, postgres_server() as server:
        speech = make_speech(Path(tmp))
        database = create_database(server)
        try:
            key = create_key_in(database, SCOPES, name="capture bench")
            with run_emulator() as emulator:
                for rate in (16000, 24000):
                    env = {"TOKEN_STREAMING_SAMPLE_RATE": str(rate), "LOG_LEVEL": "WARNING"}
                    if args.relay:
                        env["BROWSER_LIVE_MODE"] = "relay"
                    with run_service(database, emulator.url, env=env) as service:
                        with sync_playwright() as p:
                            browser = p.chromium.launch(
                                executable_path=chromium,
                                args=[
                                    "--use-fake-device-for-media-stream",
                                    "--use-fake-ui-for-media-stream",
                                    f"--use-file-for-fake-audio-capture={speech['48000']}",
                                ],
                            )
                            try:
                                started = time.monotonic()
                                record, pcm, context_rate, send_log, tap = capture(
                                    browser,
                                    service.url,
                                    key,
                                    emulator.url,
                                    args.seconds,
                                    args.relay,
                                )
                            finally:
                                browser.close()
                        results["context_rate"] = context_rate
                        results.update(measure(record, pcm, speech, rate, int(context_rate), tap))
                        sent_at = [t / 1000 for t, _ in send_log]
                        sent_ms = [b / 2 / rate * 1000 for _, b in send_log]
                        results[f"send_burst_ms_{rate}"] = round(
                            max_burst(sent_at, sent_ms) * 1000, 2
                        )
                        results[f"capture_s_{rate}"] = round(time.monotonic() - started, 2)
        except Exception as exc:  # noqa: BLE001 — the bench reports and exits non-zero
            print(f"error: could not measure: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            drop_database(server, database)
    for name, value in results.items():
        print(f"{name}: {value}")
    if args.relay:
        print("relay: 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
