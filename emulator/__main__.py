"""`python -m emulator --port 8010`: the emulator alone."""

from __future__ import annotations

import argparse

from emulator.main import run


def main() -> None:
    parser = argparse.ArgumentParser(description="The AssemblyAI emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args()
    run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
