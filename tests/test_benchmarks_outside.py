"""benchmarks/outside.py: which works it takes (rendering and transcribing are the benchmark's)."""

from __future__ import annotations

from conftest import load_benchmark


def test_the_first_works_of_each_reserved_composer_once_each_musicxml_first():
    outside = load_benchmark("outside")
    paths = [
        "bach/bwv66.6.mxl",  # fair game: never outside material
        "beethoven/opus18no1/movement1.krn",
        "beethoven/opus18no1/movement1.mxl",  # the same work: MusicXML taken
        "beethoven/opus18no1/movement2.krn",
        "beethoven/opus132.mxl",
        "chopin/mazurka06-2.krn",
        "mozart/k155/movement1.rntxt",  # an analysis, not a score
        "webern/opus27.mxl",  # not Weber
    ]
    assert outside.choose_scores(paths, 2) == [
        "beethoven/opus132.mxl",
        "beethoven/opus18no1/movement1.mxl",
        "chopin/mazurka06-2.krn",
    ]
    assert outside.choose_scores(paths, 1) == ["beethoven/opus132.mxl", "chopin/mazurka06-2.krn"]
