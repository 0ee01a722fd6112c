"""Which rank prints a run's one-line error: each rank decides alone, and an error every rank raises alike is
printed once."""

from megarecipe.rank_errors import agreed, error_line


def line(error, before_group, rank, local_rank):
    return error_line(error, before_group, {"RANK": str(rank), "LOCAL_RANK": str(local_rank)})


def test_rank_zero_prints_the_plain_line():
    assert line(ValueError("x: bad; fix it"), False, 0, 0) == "error: x: bad; fix it"
    assert error_line(ValueError("x"), True, {}) == "error: x"  # no launcher at all


def test_another_rank_prints_its_own_error_with_its_rank():
    assert (
        line(ValueError("trainer_rank3.pt is unreadable"), False, 3, 1)
        == "error (rank 3): trainer_rank3.pt is unreadable"
    )


def test_an_agreed_error_is_left_to_rank_zero():
    error = agreed(ValueError("non-finite loss"))
    assert [line(error, False, r, r % 2) for r in range(4)] == ["error: non-finite loss", None, None, None]


def test_before_the_process_group_one_rank_per_node_speaks():
    """Arguments and files are the same for the ranks of a node: rank 0 on its node, the first rank elsewhere."""
    error = ValueError("data.dir: not found")
    got = [line(error, True, r, r % 4) for r in range(8)]  # two nodes of four
    assert got == [
        "error: data.dir: not found",
        None,
        None,
        None,
        "error (rank 4): data.dir: not found",
        None,
        None,
        None,
    ]
