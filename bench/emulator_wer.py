"""How well does the emulator hear speech? Word error rate and speed of its recogniser.

espeak-ng speaks 20 fixed sentences (the pangram and Harvard sentences lists 1-2) into a
temporary folder; each WAV goes through the emulator's own path for an upload
(`recognition.decode_wav`, then `recognition.recognize`, the model loaded once first), one
sentence at a time as separate uploads would be. Prints:

  wer         word error rate over all sentences: (substitutions + deletions + insertions)
              / reference words, after lower-casing, hyphens to spaces, other punctuation
              dropped
  rtf         recognition wall time / audio time (model loading excluded: see load_s)
  rtf_cpu     this process's CPU time during recognition / audio time (less sensitive to
              other load on a shared machine; up to rtf x threads)
  audio_s, words, errors, sentences, load_s, engine

Exits 1 when it could not measure (espeak-ng missing, the `recognition` extra not installed,
a sentence that failed).  .venv/bin/python bench/emulator_wer.py [--voice en-us] [--speed 160]
[--show]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulator import recognition  # noqa: E402

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
)


def normalise(text: str) -> list[str]:
    """Lower case, hyphens to spaces, every other character but letters, digits and spaces
    dropped (so "man's" and "mans" are the same word)."""
    return re.sub(r"[^a-z0-9 ]", "", text.lower().replace("-", " ")).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    row = list(range(len(hyp) + 1))
    for i, r_word in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h_word in enumerate(hyp, 1):
            diagonal, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, diagonal + (r_word != h_word)),
            )
    return row[-1]


def speak(folder: Path, voice: str, speed: int) -> list[bytes]:
    clips = []
    for i, sentence in enumerate(SENTENCES):
        path = folder / f"{i:02d}.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), sentence],
            check=True,
            capture_output=True,
        )
        clips.append(path.read_bytes())
    return clips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice (default en-us)")
    parser.add_argument("--speed", type=int, default=160, help="words per minute (default 160)")
    parser.add_argument("--show", action="store_true", help="print each misheard sentence")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    engine = recognition.recognition_mode("auto")
    if engine == "placeholder":
        print("error: no recogniser: install the `recognition` extra", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="emulator-wer-") as tmp:
        clips = speak(Path(tmp), args.voice, args.speed)
    audios = [recognition.decode_wav(clip) for clip in clips]

    began = time.perf_counter()
    recognition.warm_up()
    load_s = time.perf_counter() - began

    errors = words = 0
    wall = cpu = audio_s = 0.0
    for sentence, audio in zip(SENTENCES, audios, strict=True):
        wall_0, cpu_0 = time.perf_counter(), time.process_time()
        heard = recognition.recognize(audio.pcm16)
        wall += time.perf_counter() - wall_0
        cpu += time.process_time() - cpu_0
        audio_s += audio.duration_s
        ref, hyp = normalise(sentence), normalise(" ".join(w.text for w in heard))
        distance = edit_distance(ref, hyp)
        errors += distance
        words += len(ref)
        if args.show and distance:
            print(f"# {distance} | {sentence} | {' '.join(hyp)}")
    if words == 0 or audio_s <= 0:
        print("error: nothing was measured", file=sys.stderr)
        return 1
    print(f"engine: {engine}")
    print(f"voice: {args.voice} at {args.speed} wpm")
    print(f"sentences: {len(SENTENCES)}")
    print(f"words: {words}")
    print(f"errors: {errors}")
    print(f"audio_s: {audio_s:.1f}")
    print(f"load_s: {load_s:.2f}")
    print(f"wer: {errors / words:.3f}")
    print(f"rtf: {wall / audio_s:.3f}")
    print(f"rtf_cpu: {cpu / audio_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
