"""Hybrid search's fusion (``services/search.py::fuse``): z-scores per list, weighted, summed;
and how deep the lists are read for it (``candidate_depth``)."""

from __future__ import annotations

import numpy as np
import pytest

from lorebase.services.search import FUSION_DEPTH, VECTOR_WEIGHT, Ranked, candidate_depth, fuse


def _ranked(*pairs: tuple[int, float]) -> list[Ranked]:
    return [Ranked(pk, score) for pk, score in pairs]


def test_scores_not_only_ranks_decide() -> None:
    # 1 leads the vector list by far, 2 the keyword list by a hair; ranks alone (RRF) would tie them
    vector = _ranked((1, 0.9), (2, 0.3), (3, 0.2))
    keyword = _ranked((2, 10.0), (1, 9.9), (3, 1.0))
    assert [r.pk for r in fuse([vector, keyword])] == [1, 2, 3]


def test_the_weights_are_the_lists_and_the_vector_list_comes_first() -> None:
    vector = _ranked((1, 1.0), (2, 0.0))
    keyword = _ranked((2, 1.0), (1, 0.0))
    assert [r.pk for r in fuse([vector, keyword])] == [1, 2]  # vector weight 0.6 > 0.4
    assert [r.pk for r in fuse([vector, keyword], weights=(0.4, 0.6))] == [2, 1]
    assert pytest.approx(0.6) == VECTOR_WEIGHT


def test_a_chunk_missing_from_a_list_gets_that_list_s_lowest_score() -> None:
    vector = _ranked((1, 0.9), (2, 0.8), (3, 0.1))
    keyword = _ranked((4, 5.0), (1, 4.0), (3, 1.0))  # 2 not matched by keywords
    fused = {r.pk: r.score for r in fuse([vector, keyword])}
    assert set(fused) == {1, 2, 3, 4}
    # 2's keyword part is the keyword list's floor, the same as 3's (3 is last there): only their
    # vector z-scores tell them apart
    v = np.array([0.9, 0.8, 0.1])
    z = (v - v.mean()) / v.std()
    assert fused[2] - fused[3] == pytest.approx(VECTOR_WEIGHT * (z[1] - z[2]))


def test_empty_and_constant_lists_do_not_break_it() -> None:
    assert fuse([[], []]) == []
    only_vector = fuse([_ranked((1, 0.5), (2, 0.4)), []])
    assert [r.pk for r in only_vector] == [1, 2]
    same = fuse([_ranked((1, 0.5), (2, 0.5)), _ranked((2, 3.0), (1, 1.0))])  # no spread: z = 0
    assert [r.pk for r in same] == [2, 1]
    ties = fuse([_ranked((5, 1.0), (4, 1.0)), []])
    assert [r.pk for r in ties] == [4, 5]  # ties by pk


def test_fusion_agrees_with_the_definition_on_random_lists() -> None:
    rng = np.random.default_rng(7)
    vector = _ranked(
        *((int(pk), float(s)) for pk, s in zip(rng.permutation(60)[:40], rng.random(40), strict=True))
    )
    keyword = _ranked(
        *((int(pk), float(s)) for pk, s in zip(rng.permutation(60)[:30], 10 * rng.random(30), strict=True))
    )
    expected: dict[int, float] = {}
    for w, ranked in ((VECTOR_WEIGHT, vector), (1 - VECTOR_WEIGHT, keyword)):
        v = np.array([h.score for h in ranked])
        z = dict(zip((h.pk for h in ranked), (v - v.mean()) / v.std(), strict=True))
        for pk in {h.pk for h in vector} | {h.pk for h in keyword}:
            expected[pk] = expected.get(pk, 0.0) + w * z.get(pk, min(z.values()))
    fused = fuse([vector, keyword])
    assert [r.pk for r in fused] == sorted(expected, key=lambda pk: (-expected[pk], pk))
    assert [r.score for r in fused] == pytest.approx([expected[r.pk] for r in fused])


def test_only_one_list_with_hits() -> None:
    only_keyword = fuse([[], _ranked((3, 2.0), (1, 4.0))])
    assert [r.pk for r in only_keyword] == [1, 3]
    assert [r.score for r in only_keyword] == pytest.approx([(1 - VECTOR_WEIGHT), -(1 - VECTOR_WEIGHT)])


def test_hybrid_reads_both_lists_at_least_the_fusion_depth() -> None:
    assert FUSION_DEPTH >= 200
    assert candidate_depth("hybrid", 10) == FUSION_DEPTH
    assert candidate_depth("hybrid", 500) == 500
    assert candidate_depth("hybrid", 10, candidates=FUSION_DEPTH + 1) == FUSION_DEPTH + 1
    assert candidate_depth("vector", 10) == 10  # a single list is not normalised: no need to read deeper
    assert candidate_depth("keyword", 10, candidates=30) == 30
