"""The test command: pytest, with "no tests collected" (exit 5) treated as a failure."""

from __future__ import annotations

import subprocess
import sys

NO_TESTS_COLLECTED = 5


def main() -> int:
    code = subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]])
    if code == NO_TESTS_COLLECTED:
        print("run_tests: pytest collected no tests; that is a failure here", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
