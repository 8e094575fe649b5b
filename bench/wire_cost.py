"""What one message's envelope costs: build, encode, decode, against another checkout.

    .venv/bin/python -m bench.wire_cost                       # this checkout alone
    git worktree add /tmp/wire1 fc6a75e                       # the last wire-1 commit
    .venv/bin/python -m bench.wire_cost --other /tmp/wire1    # both, interleaved, same command

Each side runs in its own interpreter (``PYTHONPATH`` pointing at its core), in turns,
``--rounds`` times; the best round of each is reported, with the difference per message.
The envelope is what ``Bus.publish(OrderPlaced(...), key=...)`` sends on ``memory://``:
an outgoing envelope built with ``time.time()``, encoded, decoded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys, time, timeit
from pycomms._envelope import Envelope
n = int(sys.argv[1])
body = b'{"order_id":1,"total":9.5}'
def one():
    env = Envelope(id="01a24d1ecabb3c6eabf4009c61fadfa0", type="shop.order_placed", kind="event",
                   source="91649547f4374dff", body=body, time=time.time(), key="order-1")
    Envelope.decode(env.encode())
print(min(timeit.repeat(one, number=n, repeat=5)) / n * 1e6)
"""


def measure(core: Path | None, n: int) -> float:
    """µs per message in a fresh interpreter, with ``core``'s pycomms first on the path."""
    env = dict(os.environ)
    if core is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(core / "pycomms_core" / "src"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _PROBE, str(n)], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wire_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, help="another checkout (e.g. a git worktree of an older commit)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.other is not None and not (args.other / "pycomms_core" / "src" / "pycomms").is_dir():
        parser.error(f"--other {args.other}: no pycomms_core/src/pycomms there; give a checkout of this repository")
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(args.rounds):
        mine.append(measure(None, args.messages))
        if args.other is not None:
            theirs.append(measure(args.other, args.messages))
    print(f"this checkout: {min(mine):.2f} µs per message (build + encode + decode), rounds {sorted(mine)}")
    if theirs:
        print(f"{args.other}: {min(theirs):.2f} µs per message, rounds {sorted(theirs)}")
        print(f"difference: {min(mine) - min(theirs):+.2f} µs per message (this checkout minus the other)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
