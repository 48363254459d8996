"""``storage.kept.Kept``: answers kept within a count or byte budget, least recently asked
dropped first, one too big handed back unkept, one answer per key."""

from __future__ import annotations

from storage.kept import Kept


def test_the_least_recently_asked_go_first_within_the_byte_budget() -> None:
    kept: Kept[bytes] = Kept(len, max_bytes=10, largest=6)
    for key in "abc":
        kept.keep(key, b"xxx")  # 9 bytes
    assert kept.get("a") == b"xxx"  # asked again: now the newest
    kept.keep("d", b"yy")  # 11 bytes: "b", the least recently asked, goes
    assert kept.get("b") is None and kept.get("a") and kept.get("c") and kept.get("d")
    big = b"z" * 7
    assert kept.keep("e", big) is big and kept.get("e") is None and len(kept) == 3


def test_a_count_bound_and_one_answer_per_key() -> None:
    kept: Kept[list[int]] = Kept(len, items=2)
    first = kept.keep("a", [1])
    assert kept.keep("a", [2]) is first  # another thread's answer meanwhile: the kept one wins
    kept.keep("b", [1])
    kept.keep("c", [1])
    assert kept.get("a") is None and len(kept) == 2


def test_an_answer_is_made_once_and_kept_while_it_fits() -> None:
    kept: Kept[bytes] = Kept(len, max_bytes=10, largest=6)
    made: list[str] = []

    def make(key: str, size: int) -> bytes:
        made.append(key)
        return b"x" * size

    assert kept.answer("a", lambda: make("a", 3)) == b"xxx"
    assert kept.answer("a", lambda: make("a", 3)) == b"xxx" and made == ["a"]  # kept: not made again
    assert kept.answer("big", lambda: make("big", 7)) == b"x" * 7
    assert kept.answer("big", lambda: make("big", 7)) == b"x" * 7 and made == ["a", "big", "big"]  # too big
