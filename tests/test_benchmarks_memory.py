"""benchmarks/transcribe_memory.py on a few seconds of audio: both paths run in child
processes and give the same notes; the table reads as it should."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from conftest import load_benchmark


def test_the_memory_benchmark_runs_both_paths_on_a_short_length(tmp_path):
    bench = load_benchmark("transcribe_memory")
    lines: list[str] = []
    runs = bench.run_lengths([0.25], ["stream", "whole"], tmp_path, log=lines.append)
    assert [(r.minutes, r.path) for r in runs] == [(0.25, "stream"), (0.25, "whole")]
    assert runs[0].notes == runs[1].notes == 10  # the two paths: the same transcription
    assert all(100 < r.peak_mb < 4000 and 0 < r.seconds < r.wall for r in runs)
    assert lines[0] == "piece-0.25min.wav: 0.25 min, 44.1 kHz stereo 16-bit, 3 MB"
    assert not list(tmp_path.glob("*.wav"))  # each length's audio deleted once measured
    assert (tmp_path / "stream" / "piece-0.25min.mid").read_bytes() == (
        tmp_path / "whole" / "piece-0.25min.mid"
    ).read_bytes()


def test_the_audio_is_the_excerpt_repeated_at_cd_format(tmp_path):
    bench = load_benchmark("transcribe_memory")
    bench.write_audio(tmp_path / "a.wav", 40.0)
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 2, "PCM_16", 40 * 44100)
    audio, _ = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    np.testing.assert_array_equal(audio[:44100], audio[15 * 44100 : 16 * 44100])


def test_the_table_gives_each_run_and_the_growth_per_minute():
    bench = load_benchmark("transcribe_memory")
    runs = [
        bench.Run(5, "stream", 700.4, 30.0, 40.0, 900),
        bench.Run(5, "whole", 750.0, 29.0, 39.0, 900),
        bench.Run(30, "stream", 702.6, 180.0, 190.0, 5400),
        bench.Run(30, "whole", 900.0, 174.0, 184.0, 5400),
    ]
    longer = [*runs, bench.Run(180, "stream", 702.6, 1000.0, 1010.0, 32400)]
    assert bench.table(longer).splitlines()[-2] == (
        "stream: MB per audio minute +0.09 from 5 to 30 min, +0.00 from 30 to 180 min"
    )
    assert bench.table(runs).splitlines() == [
        "| audio | path | peak RSS | transcription | wall | realtime factor |",
        "|---|---|---|---|---|---|",
        "| 5 min | stream | 700 MB | 30.0 s | 40.0 s | 0.100 |",
        "| 5 min | whole | 750 MB | 29.0 s | 39.0 s | 0.097 |",
        "| 30 min | stream | 703 MB | 180.0 s | 190.0 s | 0.100 |",
        "| 30 min | whole | 900 MB | 174.0 s | 184.0 s | 0.097 |",
        "stream: MB per audio minute +0.09 from 5 to 30 min",
        "whole: MB per audio minute +6.00 from 5 to 30 min",
    ]
