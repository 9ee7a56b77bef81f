"""The derived indexes (`execution.indexes`): outside the app hash, rebuilt from the records.

That the kept indexes equal `rebuild` of the state after every block is checked by every chain
test (`Chain.assert_derived_indexes`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from execution.codes import Code
from execution.indexes import add_to_restore, rebuild
from primitives import codec
from storage import schema
from storage.db import Database
from storage.snapshot import CHUNKS, Restore
from storage.statetree import StateTree
from tests.execution.chain import Chain
from tests.execution.exchange_helpers import BTC, BUY, ETH, IOC, SELL, btc, place, usd
from tests.execution.test_blocks import _state
from tests.execution.test_exchange import A, B, run_ok
from tests.storage.test_statetree import reference_root


def _derived(chain: Chain) -> dict[bytes, bytes]:
    return {k: v for prefix in schema.DERIVED_PREFIXES for k, v in chain.db.iterate(prefix)}


def test_the_app_hash_leaves_the_derived_indexes_out(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(5000), usd(65_000), client_id=7)))
    run_ok(ex, ex.tx(A, place(BUY, btc(1000), usd(65_000), IOC)))  # a position each, the rest rests
    result = ex.run_block([ex.tx(A, place(BUY, btc(10), usd(3_000), market=ETH, client_id=9))])
    derived = _derived(ex)
    assert {key[:6] for key in derived} == set(schema.DERIVED_PREFIXES)
    assert len([key for key in derived if key.startswith(schema.APP_CLIENT_ORDER_PREFIX)]) == 2
    state = _state(ex)
    assert not derived.keys() & state.keys()
    assert result.app_hash == reference_root(state) != reference_root(state | derived)


def test_a_derived_key_has_no_proof(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(5000), usd(65_000), client_id=7)))
    for index in _derived(ex):
        result = ex.app.query("/key", index, 0, True)
        assert result.code == Code.INVALID_QUERY
        assert "derived indexes, outside the state tree" in result.log


def test_rebuild_reads_orders_triggers_and_positions_only() -> None:
    owner = b"\x07" * 20
    order: list[codec.Value] = [3, owner, 1, 100, 5, 5, 42, 0, 0, 0]
    trigger: list[codec.Value] = [4, owner, 0, 5, 90, 0, 0, 0, 43]
    records = [
        (schema.order_key(BTC, 3), codec.encode(order)),
        (schema.order_key(BTC, 5), codec.encode([5, owner, 1, 100, 5, 5, 0, 0, 0, 0])),  # no client id
        (schema.trigger_key(ETH, 4), codec.encode(trigger)),
        (schema.position_key(owner, BTC), b"not read"),
        (schema.position_key(owner, ETH), b"not read"),
        (schema.account_key(owner), b"not read"),
    ]
    assert rebuild(reversed(records)) == sorted(
        [
            (schema.client_order_key(owner, BTC, 42), codec.encode(3)),
            (schema.client_order_key(owner, ETH, 43), codec.encode(4)),
            (schema.owner_markets_key(owner), codec.encode([BTC, ETH])),
        ]
    )
    with pytest.raises(ValueError, match="order"):
        rebuild([(schema.order_key(BTC, 3), codec.encode(order[:5]))])


def test_a_restored_snapshot_gets_its_indexes_back(ex: Chain, tmp_path: Path) -> None:
    ex.app.snapshot_interval = 2
    run_ok(ex, ex.tx(B, place(SELL, btc(5000), usd(65_000), client_id=7)))
    run_ok(
        ex,
        ex.tx(
            A,
            place(BUY, btc(1000), usd(65_000), IOC),
            place(BUY, btc(1), usd(3_000), market=ETH, client_id=3),
        ),
    )
    (manifest,) = ex.app.snapshots()
    db = Database(tmp_path / "restored")
    restore = Restore(StateTree(db), manifest)
    for index in range(CHUNKS):
        chunk = ex.app.snapshot_chunk(manifest.height, index)
        assert chunk is not None
        restore.add(index, chunk)
    batch = restore.finish()
    add_to_restore(batch)
    db.write(batch)
    outside = (schema.APP_META, schema.APP_BLOCK_TIME)
    source = {k: v for k, v in ex.db.iterate(schema.APP_PREFIX) if k not in outside}
    assert len(_derived(ex)) == 4  # two client ids, two owners' markets
    assert dict(db.iterate(schema.APP_PREFIX)) == source
    db.close()
