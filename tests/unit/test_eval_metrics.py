"""``lorebase eval`` metrics against values worked out by hand (trec_eval definitions:
linear gain, log2 discount, ideal ranking cut at k; recall over judged-relevant documents)."""

from __future__ import annotations

import math

import pytest

from lorebase.cli.evaluate import ndcg_at, recall_at


def test_ndcg_of_a_perfect_ranking_is_one() -> None:
    assert ndcg_at(["a", "b", "c"], {"a": 1, "b": 1}, 10) == pytest.approx(1.0)


def test_ndcg_of_the_only_relevant_doc_at_rank_two_is_one_over_log2_of_three() -> None:
    assert ndcg_at(["x", "a", "y"], {"a": 1}, 10) == pytest.approx(1 / math.log2(3))


def test_ndcg_uses_graded_relevance_with_linear_gain() -> None:
    rels = {"a": 2, "b": 1}
    dcg = 1 / math.log2(2) + 2 / math.log2(3)  # b first, then a
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(["b", "a"], rels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], rels, 10) == pytest.approx(1.0)
    assert ndcg_at(["b", "a"], rels, 10) < ndcg_at(["a", "b"], rels, 10)


def test_ndcg_ignores_documents_judged_zero() -> None:
    assert ndcg_at(["z", "a"], {"z": 0, "a": 1}, 10) == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("rels", [{}, {"a": 0, "b": 0}])
def test_metrics_are_zero_when_no_document_is_relevant(rels: dict[str, int]) -> None:
    assert ndcg_at(["a", "b"], rels, 10) == 0.0
    assert recall_at(["a", "b"], rels, 10) == 0.0


def test_ndcg_counts_only_the_first_k_results() -> None:
    ranked = ["x", "y", "a"]
    assert ndcg_at(ranked, {"a": 1}, 2) == 0.0
    assert ndcg_at(ranked, {"a": 1}, 3) == pytest.approx(1 / math.log2(4))


def test_ndcg_ideal_ranking_is_cut_at_k_too() -> None:
    # three relevant documents, k=2: the two shown are the best possible top 2
    assert ndcg_at(["a", "b", "x"], {"a": 1, "b": 1, "c": 1}, 2) == pytest.approx(1.0)


def test_ndcg_of_an_empty_ranking_is_zero() -> None:
    assert ndcg_at([], {"a": 1}, 10) == 0.0


def test_recall_is_the_share_of_relevant_documents_found_in_the_top_k() -> None:
    rels = {"a": 1, "b": 2, "c": 0}
    assert recall_at(["a", "x", "b"], rels, 10) == pytest.approx(1.0)
    assert recall_at(["a", "x", "b"], rels, 2) == pytest.approx(0.5)
    assert recall_at(["x", "c"], rels, 10) == 0.0
