"""Dataset build throughput: seconds of audio processed per wall-clock second, peak memory.

Renders a few minutes of the default corpus (FluidSynth), then builds it three times
into fresh folders and reports the median. Peak memory is the largest resident set of
the main process and of any worker process.

    python benchmarks/data_build.py [--pieces 12] [--seconds 30] [--workers 0]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pianotx.build import build_dataset
from pianotx.config import BuildConfig, SplitConfig
from pianotx.render.corpus import RenderOptions, render_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report = render_corpus(root / "render", RenderOptions(pieces=args.pieces, seconds=args.seconds))
        config = BuildConfig(splits=SplitConfig(holdout_piano="none"))  # process every piece
        rates = []
        for i in range(args.repeats):
            start = time.perf_counter()
            result = build_dataset(
                root / "render",
                root / f"ds{i}",
                config,
                workers=args.workers or None,
                progress=False,
                log=lambda _: None,
            )
            wall = time.perf_counter() - start
            audio = sum(p.get("seconds", 0.0) for p in result.manifest["pieces"] if not p["excluded"])
            rates.append(audio / wall)
            print(f"build {i + 1}: {audio:.0f} s of audio in {wall:.2f} s -> {audio / wall:.0f}x real time")
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"rendered {report.pieces} files, {report.seconds / 60:.1f} min of audio")
    print(f"peak memory: main process {peak_self:.0f} MiB, largest worker {peak_children:.0f} MiB")
    print(f"median build speed: {statistics.median(rates):.0f} s of audio per wall-clock second")


if __name__ == "__main__":
    main()
