"""Fusion of a dense and a lexical ranking: the arithmetic of both methods, what each fused hit keeps,
the tie order, and the refusals."""

from __future__ import annotations

import math

import pytest

from qzhou_plugins.lexical import FusedHit, LexicalHit, fuse, reciprocal_rank_fusion, weighted_fusion

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
LEXICAL = [LexicalHit("c", 12.0), LexicalHit("d", 7.0), LexicalHit("a", 2.0)]


def test_rrf_sums_reciprocal_ranks_of_the_sides_that_found_an_id() -> None:
    fused = reciprocal_rank_fusion(DENSE, LEXICAL)
    scores = {hit.id: hit.score for hit in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 62)
    assert [hit.id for hit in fused] == ["a", "c", "b", "d"]  # ties: best rank, then dense first
    assert reciprocal_rank_fusion(DENSE, LEXICAL, k=0)[0].score == pytest.approx(1 + 1 / 3)


def test_each_fused_hit_keeps_both_sides() -> None:
    by_id = {hit.id: hit for hit in fuse(DENSE, LEXICAL)}
    assert by_id["a"] == FusedHit(
        id="a", score=by_id["a"].score, dense_score=0.9, lexical_score=2.0, dense_rank=1, lexical_rank=3
    )
    assert by_id["a"].sources == ("dense", "lexical")
    assert by_id["b"].sources == ("dense",) and by_id["b"].lexical_score is None
    assert by_id["d"].sources == ("lexical",) and by_id["d"].dense_rank is None


def test_weighted_sums_min_max_normalised_scores() -> None:
    fused = {hit.id: hit.score for hit in weighted_fusion(DENSE, LEXICAL, alpha=0.25)}
    dense_normal = {"a": 1.0, "b": 0.75, "c": 0.0}
    lexical_normal = {"c": 1.0, "d": 0.5, "a": 0.0}
    for id_ in "abcd":
        expected = 0.25 * dense_normal.get(id_, 0.0) + 0.75 * lexical_normal.get(id_, 0.0)
        assert fused[id_] == pytest.approx(expected)


def test_alpha_one_and_zero_rank_by_one_side_only() -> None:
    assert [hit.id for hit in weighted_fusion(DENSE, LEXICAL, alpha=1.0)][:3] == ["a", "b", "c"]
    assert [hit.id for hit in weighted_fusion(DENSE, LEXICAL, alpha=0.0)][:3] == ["c", "d", "a"]


def test_a_side_with_equal_scores_normalises_to_one() -> None:
    fused = weighted_fusion([("x", 0.3), ("y", 0.3)], [], alpha=0.5)
    assert [(hit.id, hit.score) for hit in fused] == [("x", 0.5), ("y", 0.5)]


def test_an_empty_side_leaves_the_other_ranking() -> None:
    assert [hit.id for hit in fuse(DENSE, [])] == ["a", "b", "c"]
    assert [hit.id for hit in fuse([], LEXICAL, method="weighted")] == ["c", "d", "a"]
    assert fuse([], []) == []


def test_limit_keeps_the_best() -> None:
    assert [hit.id for hit in fuse(DENSE, LEXICAL, limit=2)] == ["a", "c"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"method": "borda"}, ValueError, "unknown fusion 'borda'; choose one of rrf, weighted"),
        ({"method": "weighted", "alpha": 1.5}, ValueError, "alpha must be from 0 to 1, not 1.5"),
        ({"method": "weighted", "alpha": -0.1}, ValueError, "alpha must be from 0 to 1"),
        ({"method": "weighted", "alpha": math.nan}, ValueError, "alpha must be a finite number"),
        ({"k": -1}, ValueError, "the RRF constant k must be at least 0"),
        ({"k": "60"}, ValueError, "k must be a finite number"),
        ({"limit": 0}, ValueError, "limit must be a positive integer or None, not 0"),
        ({"limit": 2.0}, ValueError, "limit must be a positive integer"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        fuse(DENSE, LEXICAL, **options)


@pytest.mark.parametrize(
    ("dense", "message"),
    [
        ([("a", 0.9), ("a", 0.8)], "the dense ranking holds id 'a' twice"),
        ([("a", math.inf)], "score that is not finite"),
        ([("a",)], "not an \\(id, score\\) pair"),
        ([(1, 0.5)], "must be a \\(str, number\\) pair"),
        ("ab", "must be a list of \\(id, score\\) pairs, not str"),
    ],
)
def test_bad_rankings_are_refused_by_side(dense: object, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        fuse(dense, LEXICAL)  # type: ignore[arg-type]
