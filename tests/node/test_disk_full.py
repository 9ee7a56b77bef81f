"""A durable write that fails (a full disk) halts the node cleanly, in-process and deterministic:
the WAL, the private validator's sign state and `atomic_write` on their own, then a one-validator
consensus service whose height batch, WAL append or sign-state save fails at height 4. It stops
with that one error, the stores hold height 3 whole, nothing was signed after the failed save,
and the same home restarted with space back commits height 4 (the very batch refused before) and
goes on with heights 1-3 unchanged. The address book, which the node can do without, only warns."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing

from consensus.app import InitChainRequest, ValidatorUpdate
from consensus.machine import BlockPartEvent, ProposalEvent, Step, StepChanged, TimeoutConfig, VoteEvent
from consensus.mempool import MempoolConfig
from consensus.messages import Message
from consensus.privval import FilePrivValidator, PrivValError, SignStateWriteError, load_sign_state
from consensus.state import ConsensusParams
from consensus.types import NIL_BLOCK_ID, Vote, VoteType
from consensus.wal import WAL, WALError, WALWriteError, parse_records
from execution.app import ExchangeApp
from node.node import HALT_ERRORS, Core, build_core
from p2p import addrbook
from p2p.addrbook import AddressBook
from p2p.address import NetAddress
from p2p.pex import PexHost, PexReactor
from primitives import files
from primitives.batch_verify import BatchVerifier
from primitives.files import OSFile, atomic_write
from storage.blockstore import BlockStore
from storage.db import Database, StorageError, WriteBatch
from tests.consensus.harness import GENESIS_TIME
from tests.storage.test_db_errors import FlakyLevelDB, no_space

MS = 1_000_000
TIMEOUTS = TimeoutConfig(propose=500 * MS, prevote=200 * MS, precommit=200 * MS, commit=100 * MS)
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FlakyFile(OSFile):
    """A real DurableFile that fails as a full disk does once `full` is set: an append writes
    the first half of its bytes, then ENOSPC (tmpfs and ext4 both tear a write so); a sync fails
    (ext4 allocates delayed writes at fsync); a whole-file replacement fails before the rename."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.full = False
        self.appends = 0

    def append(self, data: bytes) -> None:
        self.appends += 1
        if not self.full:
            super().append(data)
            return
        super().append(data[: len(data) // 2])
        raise ENOSPC

    def sync(self) -> None:
        if self.full:
            raise ENOSPC
        super().sync()

    def replace(self, data: bytes) -> None:
        if self.full:
            raise ENOSPC
        super().replace(data)


def vote(height: int, round_: int = 0) -> VoteEvent:
    return VoteEvent(
        Vote(VoteType.PREVOTE, height, round_, NIL_BLOCK_ID, 123, b"\x01" * 20, 0, b"\x02" * 64), "peer1"
    )


# -- the WAL -------------------------------------------------------------------------------------


def test_a_failed_wal_append_is_one_error_and_the_log_takes_nothing_more(tmp_path: Path) -> None:
    file = FlakyFile(tmp_path / "wal")
    wal = WAL(file)
    wal.write(1, vote(1))
    wal.write_end_height(2, 1)
    good = (tmp_path / "wal").stat().st_size
    file.full = True
    with pytest.raises(WALWriteError) as caught:
        wal.write(3, vote(2), sync=True)
    assert (
        str(caught.value)
        == f"cannot write the WAL {tmp_path / 'wal'}: No space left on device; free space and restart"
    )
    assert isinstance(caught.value, WALError), "derivd start reports WALErrors as one line"
    torn = (tmp_path / "wal").stat().st_size
    assert torn > good, "the failed append tore the file's tail, as a full disk does"
    with pytest.raises(WALWriteError):  # a record after the torn one would be cut with it
        wal.write_end_height(4, 2)
    assert file.appends == 3 and (tmp_path / "wal").stat().st_size == torn
    wal.close()  # the node's shutdown: no sync of what failed, no second error
    reopened = WAL.open(tmp_path / "wal")
    assert reopened.size == good
    assert reopened.replay_after_last_end_height(committed_height=1) == []
    reopened.write(5, vote(2))
    reopened.close()
    assert [r.event for r in WAL.open(tmp_path / "wal").replay_after_last_end_height(1)] == [vote(2)]


def test_a_failed_wal_rotation_is_the_same_halt_and_keeps_the_old_log(tmp_path: Path) -> None:
    file = FlakyFile(tmp_path / "wal")
    wal = WAL(file, rotate_bytes=1)
    wal.write(1, vote(1))

    def full_disk(data: bytes) -> None:
        raise ENOSPC

    file.replace = full_disk  # type: ignore[method-assign]  # the appends fit, the new file does not
    with pytest.raises(WALWriteError, match="No space left on device; free space and restart"):
        wal.write_end_height(2, 1)
    wal.close()
    records, _ = parse_records((tmp_path / "wal").read_bytes())
    assert [r.end_height for r in records] == [None, 1]


# -- the private validator ----------------------------------------------------------------------


def test_a_failed_sign_state_save_releases_no_signature_and_refuses_every_later_one(tmp_path: Path) -> None:
    pv = FilePrivValidator.generate(tmp_path / "key.json", tmp_path / "state.json")
    first = pv.sign_vote("chain", Vote(VoteType.PREVOTE, 3, 0, NIL_BLOCK_ID, 1, pv.address, 0))
    saved = (tmp_path / "state.json").read_bytes()
    state_file = FlakyFile(tmp_path / "state.json")
    pv = FilePrivValidator(pv.key, state_file, pv.last)
    state_file.full = True
    precommit = Vote(VoteType.PRECOMMIT, 3, 0, NIL_BLOCK_ID, 1, pv.address, 0)
    with pytest.raises(SignStateWriteError) as caught:
        pv.sign_vote("chain", precommit)
    assert str(caught.value) == (
        f"cannot save the validator's sign state {tmp_path / 'state.json'}: No space left on device; "
        "nothing was signed; free space and restart"
    )
    assert isinstance(caught.value, PrivValError), "derivd start reports PrivValErrors as one line"
    assert (tmp_path / "state.json").read_bytes() == saved
    assert (pv.last.height, pv.last.step, pv.last.signature) == (3, 2, first.signature)
    state_file.full = False  # space is back: this process still signs nothing new
    with pytest.raises(SignStateWriteError):
        pv.sign_vote("chain", precommit)
    with pytest.raises(SignStateWriteError):
        pv.sign_vote("chain", Vote(VoteType.PREVOTE, 4, 0, NIL_BLOCK_ID, 1, pv.address, 0))
    assert (tmp_path / "state.json").read_bytes() == saved
    restarted = FilePrivValidator.load(tmp_path / "key.json", tmp_path / "state.json")
    assert restarted.sign_vote("chain", precommit).signature


def test_a_missing_sign_state_that_cannot_be_written_is_a_privval_error(tmp_path: Path) -> None:
    state_file = FlakyFile(tmp_path / "state.json")
    state_file.full = True
    with pytest.raises(
        SignStateWriteError, match=r"state\.json: No space left on device; free space and restart"
    ):
        load_sign_state(state_file)


def test_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"old content\n")

    def write_then_fill(fd: int, data: Any) -> int:
        if len(data) > 4:
            return os.write(fd, bytes(data[:4]))  # a short write: the disk is filling
        raise ENOSPC

    monkeypatch.setattr(files, "os", SimpleNamespace(**{**vars(os), "write": write_then_fill}))
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write(path, b"new content, longer than the space left\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# -- a write the node can do without ---------------------------------------------------------------


async def test_an_address_book_that_cannot_be_saved_is_a_warning_and_the_node_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path, own, peer = tmp_path / "addrbook.json", "aa" * 20, NetAddress("bb" * 20, "10.0.0.2", 26656)
    book = AddressBook(path, own)
    assert book.add(peer, "peer")
    pex = PexReactor(book, cast(PexHost, None), rng=random.Random(1))  # saving needs no switch

    def full_disk(path: Path, data: bytes, mode: int = 0o644) -> None:
        raise ENOSPC

    monkeypatch.setattr(addrbook, "atomic_write", full_disk)
    with caplog.at_level(logging.WARNING, logger="derivd.p2p"):
        await pex.save_book()
    assert caplog.messages == [f"could not save the address book {path}: {ENOSPC}"]
    assert book.dirty and not path.exists()
    monkeypatch.undo()  # space is back: the next round saves it
    await pex.save_book()
    assert not book.dirty and AddressBook.load(path, own).addresses() == [peer]


# -- the consensus service -------------------------------------------------------------------------


class Stop(Exception):
    """The test has seen what it waited for."""


class Home:
    """A one-validator node's stores in `path`, with its database, WAL and sign state able to
    fail as a full disk does."""

    def __init__(self, path: Path, first_start: bool) -> None:
        key_path, state_path = path / "pv_key.json", path / "pv_state.json"
        if first_start:
            FilePrivValidator.generate(key_path, state_path)
        self.sign_state = FlakyFile(state_path)
        loaded = FilePrivValidator.load(key_path, state_path)
        self.privval = FilePrivValidator(loaded.key, self.sign_state, loaded.last)
        self.db = Database(path / "db")
        self.leveldb = FlakyLevelDB(self.db._db)
        self.db._db = self.leveldb
        self.batches: list[list[tuple[bytes, bytes | None]]] = []
        write = self.db.write

        def recorded(batch: WriteBatch, *, sync: bool = True) -> None:
            self.batches.append(list(batch.ops))
            write(batch, sync=sync)

        self.db.write = recorded  # type: ignore[method-assign]
        self.wal_file = FlakyFile(path / "wal")
        verifier = BatchVerifier(workers=1)
        genesis = InitChainRequest(
            "disk-chain",
            GENESIS_TIME,
            1,
            (ValidatorUpdate(self.privval.public_key.raw, 10),),
            json.dumps({"accounts": []}).encode(),
        )
        self.core: Core = build_core(
            self.db,
            ExchangeApp(self.db, "disk-chain", verifier),
            verifier,
            self.privval,
            WAL(self.wal_file),
            genesis,
            ConsensusParams(),
            TIMEOUTS,
            MempoolConfig(),
        )
        self.sent: list[Message] = []
        self.core.driver.gossip.append(self.sent.append)

    def fail(self, writer: str) -> None:
        """From now on the disk is full for `writer`."""
        if writer == "database":
            self.leveldb.error = no_space(self.db.path)
        elif writer == "wal":
            self.wal_file.full = True
        else:
            self.sign_state.full = True

    def hashes(self, top: int) -> list[bytes]:
        blocks = BlockStore(self.db)
        return [blocks.hash_at(h) or b"" for h in range(1, top + 1)]

    async def run(self, at: Callable[[StepChanged], None]) -> BaseException:
        """Run the service, calling `at` with each step, until something ends it; what did."""

        def listener(step: StepChanged) -> None:
            at(step)

        self.core.driver.step_listeners.append(listener)
        with pytest.raises(BaseExceptionGroup) as caught:
            with trio.fail_after(60):  # virtual seconds (autojump clock)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.core.service.run)
        leaves = leaf_exceptions(caught.value)
        assert len(leaves) == 1, leaves
        return leaves[0]

    def close(self) -> None:
        self.core.driver.wal.close()
        self.db.close()


def leaf_exceptions(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(leaf_exceptions(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def at_height(height: int, action: Callable[[], None]) -> Callable[[StepChanged], None]:
    def at(step: StepChanged) -> None:
        if step.height == height and step.step == Step.NEW_HEIGHT:
            action()

    return at


def stop() -> None:
    raise Stop


MESSAGES = {
    "database": "cannot write the database at {home}/db: IO error: {home}/db/000003.log: "
    "No space left on device; free space and restart",
    "wal": "cannot write the WAL {home}/wal: No space left on device; free space and restart",
    "sign state": "cannot save the validator's sign state {home}/pv_state.json: No space left on "
    "device; nothing was signed; free space and restart",
}


@pytest.mark.parametrize("writer", ["database", "wal", "sign state"])
async def test_a_full_disk_halts_consensus_with_one_error_and_a_restart_resumes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, writer: str
) -> None:
    home = Home(tmp_path, first_start=True)
    halted = await home.run(at_height(4, lambda: home.fail(writer)))
    assert isinstance(halted, HALT_ERRORS) and isinstance(halted, StorageError | WALError | PrivValError)
    assert str(halted) == MESSAGES[writer].format(home=tmp_path)
    assert home.core.blocks.height == 3
    before = home.hashes(3)
    refused = home.batches[-1]
    signed = home.privval.last
    assert signed.height <= 4
    home.close()

    if writer == "sign state":  # nothing of height 4 was signed, so nothing of it went out
        assert signed.height == 3
        own = [m for m in home.sent if isinstance(m, ProposalEvent | BlockPartEvent | VoteEvent)]
        assert {height_of(m) for m in own} == {1, 2, 3}
    assert load_sign_state(OSFile(tmp_path / "pv_state.json")) == signed

    restarted = Home(tmp_path, first_start=False)  # the same files, with space
    assert restarted.core.service.machine.state.last_block_height == 3
    stopped = await restarted.run(at_height(7, stop))
    assert isinstance(stopped, Stop)
    assert restarted.hashes(3) == before
    assert restarted.core.blocks.height == 6
    if writer == "database":  # height 4 was decided: the WAL replays it and the same batch lands
        assert restarted.batches[0] == refused
    restarted.close()


def height_of(message: ProposalEvent | BlockPartEvent | VoteEvent) -> int:
    if isinstance(message, ProposalEvent):
        return message.proposal.height
    if isinstance(message, BlockPartEvent):
        return message.height
    return message.vote.height
