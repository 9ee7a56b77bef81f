"""The address book: what it accepts, persistence through an atomic JSON file and reloading,
forgetting addresses that never work, back-off and choice of addresses to dial."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from p2p.addrbook import MAX_FAILED_ATTEMPTS, AddressBook
from p2p.address import NetAddress

OWN = "00" * 20
PRIVATE = "11" * 20


def addr(n: int, port: int = 26656) -> NetAddress:
    return NetAddress(f"{n:02x}" * 20, f"10.0.0.{n}", port)


def test_book_persists_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "config" / "addrbook.json"
    book = AddressBook.load(path, OWN, private_ids=[PRIVATE])
    assert len(book) == 0
    assert book.add(addr(2), "seed") and book.add(addr(3), addr(2).node_id) and book.add(addr(4), "peer")
    assert not book.add(addr(2), "seed")  # known as is
    assert not book.add(NetAddress(OWN, "10.0.0.1", 1), "peer")
    assert not book.add(NetAddress(PRIVATE, "10.0.0.1", 1), "peer")
    book.mark_good(addr(2))
    book.mark_failed(addr(3).node_id)
    assert book.dirty
    book.save()
    assert not book.dirty
    document = json.loads(path.read_text())
    assert document["node_id"] == OWN
    assert [e["address"] for e in document["addresses"]] == [str(addr(n)) for n in (2, 3, 4)]
    assert not list(path.parent.glob(".*.tmp"))

    again = AddressBook.load(path, OWN)
    assert again.addresses() == [addr(2), addr(3), addr(4)]
    two, three = again.get(addr(2).node_id), again.get(addr(3).node_id)
    assert two is not None and two.ever_connected and two.source == "seed"
    assert three is not None and three.attempts == 1 and three.source == addr(2).node_id


def test_a_moved_peer_is_updated() -> None:
    book = AddressBook(None, OWN)
    book.add(addr(2), "peer")
    assert book.add(addr(2, port=9), "peer")
    assert book.addresses() == [addr(2, port=9)]


def test_addresses_that_never_work_are_forgotten() -> None:
    book = AddressBook(None, OWN)
    book.add(addr(2), "peer")
    book.add(addr(3), "peer")
    book.mark_good(addr(3))
    for _ in range(MAX_FAILED_ATTEMPTS):
        book.mark_failed(addr(2).node_id)
        book.mark_failed(addr(3).node_id)
    assert addr(2).node_id not in book
    assert addr(3).node_id in book  # it worked once: kept, with back-off


def test_unreadable_file_starts_an_empty_book(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "addrbook.json"
    path.write_text("{not json")
    assert len(AddressBook.load(path, OWN)) == 0
    path.write_text(json.dumps({"addresses": [{"address": "junk"}, {"address": str(addr(5))}]}))
    assert AddressBook.load(path, OWN).addresses() == [addr(5)]
    assert any("skipping entry" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_book_size_is_bounded() -> None:
    book = AddressBook(None, OWN, max_size=2)
    assert book.add(addr(2), "p") and book.add(addr(3), "p")
    assert not book.add(addr(4), "p")


def test_pick_to_dial_honours_exclusions_and_back_off() -> None:
    rng = random.Random(1)
    book = AddressBook(None, OWN)
    book.add(addr(2), "peer")
    book.add(addr(3), "peer")
    exclude_three = {addr(3).node_id}.__contains__
    assert book.pick_to_dial(rng, 0.0, exclude=exclude_three, retry_base=1, retry_cap=60) == addr(2)
    book.mark_attempt(addr(2).node_id, 0.0)
    book.mark_failed(addr(2).node_id)
    book.mark_failed(addr(2).node_id)  # two failures: wait 4 s
    assert book.pick_to_dial(rng, 3.9, exclude=exclude_three, retry_base=1, retry_cap=60) is None
    assert book.pick_to_dial(rng, 4.0, exclude=exclude_three, retry_base=1, retry_cap=60) == addr(2)
    assert sorted(book.sample(10, rng, exclude=exclude_three)) == [addr(2)]
