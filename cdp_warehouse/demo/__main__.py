"""``python -m cdp_warehouse.demo FILE [--events N]``: write the demo's Segment-spec events."""

from __future__ import annotations

import argparse
import time

from rich.console import Console

from cdp_warehouse.demo.generator import write_jsonl


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cdp_warehouse.demo", description=__doc__)
    parser.add_argument("path", help="JSONL file to write")
    parser.add_argument("--events", type=int, default=200_000, help="how many messages (default 200000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=120, help="days of history before now")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with Console(stderr=True).status(f"generating {args.events:,} events"):
        count = write_jsonl(args.path, args.events, seed=args.seed, days=args.days)
    Console().print(f"wrote {count:,} Segment-spec messages to {args.path} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
