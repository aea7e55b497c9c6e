"""``length_batches``: how the local runtimes cut a call into model batches of similar length."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lorebase.adapters.embedders.local import length_batches


@given(
    st.lists(st.integers(min_value=1, max_value=256), max_size=200), st.integers(min_value=1, max_value=64)
)
def test_every_text_once_in_batches_of_at_most_size_sorted_by_length(lengths: list[int], size: int) -> None:
    batches = length_batches(lengths, size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(0 < len(b) <= size for b in batches)
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first, across and within batches
    for b in batches:  # no batch pads a short text to a much longer one
        assert lengths[b[-1]] <= 1.5 * lengths[b[0]] + 8


def test_document_order_chunks_are_regrouped_by_length() -> None:
    # three documents of two long chunks and a short last one, as chunking makes them
    lengths = [250, 240, 40, 245, 250, 35, 248, 239, 50]
    assert length_batches(lengths, 4) == [[5, 2, 8], [7, 1, 3, 6], [0, 4]]
