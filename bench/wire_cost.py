"""What one message's envelope costs: build, encode, decode, against another checkout.

    .venv/bin/python -m bench.wire_cost                       # this checkout alone
    git worktree add /tmp/wire1 fc6a75e                       # the last wire-1 commit
    .venv/bin/python -m bench.wire_cost --other /tmp/wire1    # both, interleaved, same command

For instruction counts (repeatable on a busy machine), run the loop alone under callgrind,
twice per side, and divide the difference by the difference in loops:

    valgrind --tool=callgrind .venv/bin/python -m bench.wire_cost --loop 1000 [--core /tmp/wire1]
    valgrind --tool=callgrind .venv/bin/python -m bench.wire_cost --loop 11000 [--core /tmp/wire1]

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
n, mode, spacing = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
body = b'{"order_id":1,"total":9.5}'
start, count = time.time(), iter(range(1 << 62))
clock = time.time if spacing < 0 else (lambda: start + next(count) * spacing)
def one():
    env = Envelope(id="01a24d1ecabb3c6eabf4009c61fadfa0", type="shop.order_placed", kind="event",
                   source="91649547f4374dff", body=body, time=clock(), key="order-1")
    Envelope.decode(env.encode())
if mode == "loop":
    for _ in range(n):
        one()
else:
    print(min(timeit.repeat(one, number=n, repeat=5)) / n * 1e6)
"""


def measure(core: Path | None, n: int, mode: str = "time", spacing: float = -1.0) -> float:
    """µs per message in a fresh interpreter, with ``core``'s pycomms first on the path
    (``mode`` "loop": just run ``n`` messages, for an instruction counter). ``spacing``:
    seconds between the messages' times, or negative for the real clock."""
    env = dict(os.environ)
    if core is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(core / "pycomms_core" / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", _PROBE, str(n), mode, str(spacing)]
    if mode == "loop":
        os.execve(sys.executable, command, env)  # in this very process, so callgrind counts it
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wire_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, help="another checkout (e.g. a git worktree of an older commit)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--loop", type=int, metavar="N", help="only run N messages (for callgrind), no timing")
    parser.add_argument("--core", type=Path, help="with --loop: the checkout whose core to use")
    parser.add_argument(
        "--spacing-us",
        type=float,
        default=-1.0,
        help="with --loop: give message i the time start + i × this many µs instead of the clock (a burst at"
        " full speed, which valgrind's slowdown would otherwise spread out)",
    )
    args = parser.parse_args(argv)
    if args.loop is not None:
        measure(args.core, args.loop, "loop", args.spacing_us / 1e6 if args.spacing_us >= 0 else -1.0)
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
