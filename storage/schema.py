"""Every key layout of the node's LevelDB, in one place; nothing else builds keys.

Heights are 8-byte big-endian so that keys of one prefix sort by height. Prefixes:

| prefix | key | value |
|---|---|---|
| `f:format` | | the layout version of this database (`FORMAT`, decimal ASCII) |
| `b:meta` | | block store range `[base, height]` |
| `b:blk:` | height | encoded block |
| `b:hash:` | block hash | height |
| `b:hh:` | height | block hash |
| `b:seen:` | height | the commit this node saw for the block at height |
| `b:res:` | height | encoded finalize-block results |
| `b:tx:` | tx hash | `[height, index]` |
| `b:txl:` | height | the hashes of the block's txs (32 bytes each, in order), to prune their `b:tx:` |
| `c:state` | | consensus state after the last committed block |
| `c:vals:` | height | validator set that signs the block at height |
| `c:ev:` | evidence hash | height of the block that committed the evidence |
| `c:evp:` | evidence hash | encoded evidence waiting for a block |
| `a:meta` | | application `[height, app hash]` |
| `a:acct:` | address | an account |
| `a:val:` | validator address | validator registry entry `[pub_key, power]` (in the app hash) |
| `a:ev:` | block height, index | misbehavior handed over in that block (in the app hash; index: 4-byte BE) |
| `a:supply` | | total quote supply fixed at genesis (canonical int; part of the app hash) |
| `a:time` | | time (ns) of the last committed block (canonical int; not in the app hash) |
| `a:mkt:` | market id (4-byte BE) | a market's parameters (`execution.markets.Market`) |
| `a:ord:` | market id, order id (8-byte BE) | a resting order (`execution.exchange.orderbook.Order`) |
| `a:cid:` | owner (20), market id, client id (8-byte BE) | order id of a live client order id (note 1) |
| `a:pos:` | owner (20), market id | a position (`execution.positions.position.Position`) |
| `a:oid:` | market id | the market's next order id (canonical int; absent: 1) |
| `a:trg:` | market id, order id (8-byte BE) | a resting trigger order (`execution.exchange.trigger_book`) |
| `a:twp:` | owner (20), twap id (8-byte BE) | a live TWAP (`execution.exchange.twap.Twap`) |
| `a:twd:` | next height (8-byte BE), owner (20), twap id (8-byte BE) | `0`: a TWAP's next slice is due then |
| `a:twn:` | owner (20) | the owner's next twap id (canonical int; absent: 1) |
| `a:twc` | | the lowest height whose due TWAP slices the per-block cap left waiting (absent: none) |
| `a:fep` | | the fee schedule (`execution.fees.FeeParams`) |
| `a:rlp` | | the order-rate window's parameters `[window_blocks, orders_per_window]` (`execution.fees`) |
| `a:tgp` | | triggered-order parameters `[max_triggers_per_block]` (`execution.risk.triggers`) |
| `a:orc:` | market id | the oracle price `[price, updated_height]` |
| `a:ovt:` | market id, validator address (20) | a validator's latest vote `[price, height]` |
| `a:orp` | | oracle parameters `[max_vote_age_blocks, stale_after_blocks, max_price_move_ppm]` |
| `a:fpr` | | funding parameters (`execution.risk.funding.FundingParams`, its fields in order) |
| `a:fnx` | | the block time (ns) at or after which the next funding tick happens |
| `a:fmk:` | market id | funding of a market `[index, last_rate_ppm, sample_sum, sample_count]` |
| `a:fpl:` | market id | a market's funding pool `[balance, sweepable, dust]` (`execution.risk.funding`) |
| `a:lqp` | | liquidation parameters (`execution.risk.liquidation.LiquidationParams`) |
| `a:lqq` | | the liquidation queue: `[owner, ...]`, candidates carried to the next block, in order |
| `a:lqm:` | market id | `[price, funding index, up, down]` the liquidation pass last saw |
| `a:lqh:` | height | that block's liquidation records, in order (`execution.risk.history`) |
| `a:lqi` | | the heights with an `a:lqh:` value, ascending (the last `KEPT_BLOCKS` with records) |
| `a:hld:` | market id, owner (20) | a holder: `[0, 0]` (band unknown) or its band edge's key |
| `a:hbu:` | market id, owner (20) | `0`: the holder's band is unknown (checked on every move) |
| `a:hbl:` | market id, key (32), owner (20) | `0`: a long's band edge (`execution.positions.holders`) |
| `a:hbh:` | market id, key (32), owner (20) | `0`: a short's band edge |
| `a:inp` | | insurance fund parameters (`execution.risk.insurance.InsuranceParams`) |
| `a:pmk:` | owner (20) | the market ids of the owner's position records, ascending (absent: none; note 1) |
| `a:ops:` | market id | a settled option series (`execution.risk.option_series.SeriesSettlement`) |
| `a:opm:` | market id | an option series' last mark (`execution.options.marks.OptionMark`) |
| `a:opp` | | option parameters (`execution.options.portfolio.PortfolioParams`) |
| `a:vol:` | underlying market id, expiry (ns, 8-byte BE) | implied volatility `[vol_ppm, updated_height]` |
| `a:vvt:` | underlying market id, expiry (ns, 8-byte BE), validator (20) | a validator's latest vol vote |
| `a:vop` | | volatility oracle parameters (`execution.oracle.volatility.VolParams`) |
| `a:brp` | | bridge parameters (`execution.bridge.params.BridgeParams`; absent: no bridge) |
| `a:brk:` | validator (20) | the validator's bridge key: a 20-byte EVM address |
| `a:brt` | | bridge totals `[deposited, withdrawn]` (`execution.bridge.totals`) |
| `a:bvn` | | the latest bridge valset nonce (canonical int) |
| `a:bvs:` | nonce (8-byte BE) | a bridge valset `[[evm address, power], ...]` (`execution.bridge.valsets`) |
| `a:bvp:` | nonce (8-byte BE) | `0`: the valset awaits the signatures of the set before it |
| `a:bvg:` | nonce (8-byte BE), EVM address (20) | a signature of the valset by a member of the set before |
| `a:bdc:` | deposit id (32) | a credited deposit `[height, claim]` (`execution.bridge.deposits`) |
| `a:bdv:` | deposit id (32), validator (20) | the validator's vote on a deposit not yet credited: the claim |
| `a:bwd:` | owner (20), number (8-byte BE) | a withdrawal (`execution.bridge.withdrawals`) |
| `a:bwp:` | owner (20), number (8-byte BE) | `0`: the withdrawal awaits signatures |
| `a:bws:` | owner (20), number (8-byte BE), EVM address (20) | a bridge signature of the withdrawal |
| `a:bwn:` | owner (20) | the owner's next withdrawal number (canonical int; absent: 1) |
| `s:n:` | version, nibble path (a byte per nibble) | a state tree node (`storage.statetree`) |
| `s:r:` | version | the state tree's root at that version (`[]`: empty) |
| `s:x:` | version | the state tree nodes no version from this one on uses (pruning) |
| `s:snap:` | height | the manifest of the state snapshot taken at that height (`storage.snapshot`) |
| `t:fee:` | sender (20), nonce (8-byte BE) | fees a tx owes the fee collector: block-local, never stored |
| `i:meta` | | the event index's range `[base, height]` (`node.indexer`; absent: nothing indexed) |
| `i:tx:` | height, tx index (4-byte BE) | the hash of an indexed transaction |
| `i:ta:` | attribute (note 2), height, tx index, event index (4-byte BE each) | empty: a tx event's |
| `i:ba:` | attribute (note 2), height, event index (4-byte BE) | empty: a finalize-block event's |

Note 1: a derived index (`execution.indexes`): kept beside the state, outside the state tree.
Note 2: `event type.key` (UTF-8, after its length as 2 bytes BE), then the value (UTF-8, after its
length as 4 bytes BE): all entries of one attribute, and of one attribute and value, share a prefix.
"""

from __future__ import annotations

from functools import lru_cache

HEIGHT_SIZE = 8

FORMAT_KEY = b"f:format"
FORMAT = 3
"""The layout this code writes. 2: the derived indexes outside the state tree and the blocks'
tx hash lists (`b:txl:`); a database without the stamp was written before (format 1). 3: the
holder index's sorted band edges (`a:hb*`, holder values of five fields), liquidation marks with
the funding clocks, the 8-hour funding parameters, the liquidation work budget, the insurance and
liquidation-history records."""

BLOCK_STORE_META = b"b:meta"
_BLOCK = b"b:blk:"
_BLOCK_HASH = b"b:hash:"
_HASH_BY_HEIGHT = b"b:hh:"
_SEEN_COMMIT = b"b:seen:"
_RESULTS = b"b:res:"
_TX = b"b:tx:"
_TX_LIST = b"b:txl:"

CONSENSUS_STATE = b"c:state"
_VALIDATORS = b"c:vals:"
_COMMITTED_EVIDENCE = b"c:ev:"
PENDING_EVIDENCE_PREFIX = b"c:evp:"

STATE_NODE_PREFIX = b"s:n:"
STATE_ROOT_PREFIX = b"s:r:"
STATE_STALE_PREFIX = b"s:x:"
SNAPSHOT_PREFIX = b"s:snap:"

INDEX_META = b"i:meta"
INDEX_TX_PREFIX = b"i:tx:"
INDEX_TX_ATTRIBUTE_PREFIX = b"i:ta:"
INDEX_BLOCK_ATTRIBUTE_PREFIX = b"i:ba:"
INDEX_POSITION_SIZE = 4

APP_META = b"a:meta"
APP_ACCOUNT_PREFIX = b"a:acct:"
APP_PREFIX = b"a:"


def height_bytes(height: int) -> bytes:
    if not 0 <= height < 2**63:
        raise ValueError(f"height {height} out of range")
    return height.to_bytes(HEIGHT_SIZE, "big")


def height_from_bytes(raw: bytes) -> int:
    if len(raw) != HEIGHT_SIZE:
        raise ValueError(f"a stored height is {HEIGHT_SIZE} bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def state_node_key(version: int, path: bytes) -> bytes:
    """A state tree node: written at `version`, at nibble path `path` (one byte, 0-15, per nibble)."""
    return STATE_NODE_PREFIX + height_bytes(version) + path


def state_root_key(version: int) -> bytes:
    return STATE_ROOT_PREFIX + height_bytes(version)


def snapshot_key(height: int) -> bytes:
    return SNAPSHOT_PREFIX + height_bytes(height)


def state_stale_key(since: int) -> bytes:
    """The state tree nodes that versions >= `since` no longer use (`storage.statetree`)."""
    return STATE_STALE_PREFIX + height_bytes(since)


def block_key(height: int) -> bytes:
    return _BLOCK + height_bytes(height)


def block_hash_key(block_hash: bytes) -> bytes:
    return _BLOCK_HASH + block_hash


def hash_by_height_key(height: int) -> bytes:
    return _HASH_BY_HEIGHT + height_bytes(height)


def seen_commit_key(height: int) -> bytes:
    return _SEEN_COMMIT + height_bytes(height)


def results_key(height: int) -> bytes:
    return _RESULTS + height_bytes(height)


def tx_key(tx_hash: bytes) -> bytes:
    return _TX + tx_hash


def tx_list_key(height: int) -> bytes:
    return _TX_LIST + height_bytes(height)


def index_tx_key(height: int, index: int) -> bytes:
    """An indexed transaction, by its place in the chain."""
    return INDEX_TX_PREFIX + height_bytes(height) + _fixed(index, INDEX_POSITION_SIZE, "tx index")


def index_attribute_prefix(prefix: bytes, composite_key: str, value: str | None = None) -> bytes:
    """The entries of one event attribute (`type.key`) under `prefix` (`INDEX_TX_ATTRIBUTE_PREFIX`
    or `INDEX_BLOCK_ATTRIBUTE_PREFIX`), or of one attribute and value."""
    raw = composite_key.encode()
    out = prefix + _fixed(len(raw), 2, "attribute key length") + raw
    return out if value is None else out + index_value(value)


@lru_cache(maxsize=4096)
def index_attribute_head(prefix: bytes, event_type: str, key: str) -> bytes:
    """`index_attribute_prefix(prefix, f"{event_type}.{key}")`, kept for the attributes seen (an
    event type has few keys; a block indexes tens of thousands of attributes)."""
    return index_attribute_prefix(prefix, f"{event_type}.{key}")


def index_value(value: str) -> bytes:
    """The value part of an event index key (its length, then its UTF-8)."""
    body = value.encode()
    return _fixed(len(body), 4, "attribute value length") + body


def index_event_number(number: int) -> bytes:
    """The last part of a tx event's index key (after `index_position(height, tx index)`)."""
    return _fixed(number, INDEX_POSITION_SIZE, "event position")


def index_position(height: int, *positions: int) -> bytes:
    """The end of an event index key: height, then tx index and event index (or event index)."""
    return height_bytes(height) + b"".join(
        _fixed(p, INDEX_POSITION_SIZE, "event position") for p in positions
    )


def split_index_attribute_key(prefix: bytes, key: bytes) -> tuple[str, int, tuple[int, ...]]:
    """(value, height, positions) of an event index entry under `prefix` (the inverse of
    `index_attribute_prefix` + `index_position` past the composite key)."""
    at = len(prefix)
    at += 2 + int.from_bytes(key[at : at + 2], "big")
    size = int.from_bytes(key[at : at + 4], "big")
    value = key[at + 4 : at + 4 + size].decode()
    at += 4 + size
    height = height_from_bytes(key[at : at + HEIGHT_SIZE])
    rest = key[at + HEIGHT_SIZE :]
    size = INDEX_POSITION_SIZE
    positions = tuple(int.from_bytes(rest[i : i + size], "big") for i in range(0, len(rest), size))
    return value, height, positions


def validators_key(height: int) -> bytes:
    return _VALIDATORS + height_bytes(height)


def committed_evidence_key(evidence_hash: bytes) -> bytes:
    return _COMMITTED_EVIDENCE + evidence_hash


def pending_evidence_key(evidence_hash: bytes) -> bytes:
    return PENDING_EVIDENCE_PREFIX + evidence_hash


def account_key(address: bytes) -> bytes:
    return APP_ACCOUNT_PREFIX + address


def address_from_account_key(key: bytes) -> bytes:
    if not key.startswith(APP_ACCOUNT_PREFIX):
        raise ValueError("not an account key")
    return key[len(APP_ACCOUNT_PREFIX) :]


APP_SUPPLY = b"a:supply"
APP_BLOCK_TIME = b"a:time"


APP_VALIDATOR_PREFIX = b"a:val:"
APP_EVIDENCE_PREFIX = b"a:ev:"
EVIDENCE_INDEX_SIZE = 4


def validator_key(address: bytes) -> bytes:
    """The application's registry entry of the validator with the 20-byte `address`."""
    if len(address) != 20:
        raise ValueError(f"a validator address is 20 bytes, got {len(address)}")
    return APP_VALIDATOR_PREFIX + address


def address_from_validator_key(key: bytes) -> bytes:
    if not key.startswith(APP_VALIDATOR_PREFIX) or len(key) != len(APP_VALIDATOR_PREFIX) + 20:
        raise ValueError("not a validator key")
    return key[len(APP_VALIDATOR_PREFIX) :]


def evidence_key(block_height: int, index: int) -> bytes:
    """The `index`-th misbehavior handed to the application in the block at `block_height`."""
    if not 0 <= index < 2 ** (8 * EVIDENCE_INDEX_SIZE):
        raise ValueError(f"evidence index {index} out of range")
    return APP_EVIDENCE_PREFIX + height_bytes(block_height) + index.to_bytes(EVIDENCE_INDEX_SIZE, "big")


def evidence_key_position(key: bytes) -> tuple[int, int]:
    """(block height, index) of an evidence key."""
    body = key[len(APP_EVIDENCE_PREFIX) :]
    if not key.startswith(APP_EVIDENCE_PREFIX) or len(body) != HEIGHT_SIZE + EVIDENCE_INDEX_SIZE:
        raise ValueError("not an evidence key")
    return height_from_bytes(body[:HEIGHT_SIZE]), int.from_bytes(body[HEIGHT_SIZE:], "big")


# -- exchange (markets, orders, positions, oracle) ----------------------------------------------

MARKET_ID_SIZE = 4
ORDER_ID_SIZE = 8
CLIENT_ID_SIZE = 8
OWNER_SIZE = 20

APP_MARKET_PREFIX = b"a:mkt:"
APP_ORDER_PREFIX = b"a:ord:"
APP_CLIENT_ORDER_PREFIX = b"a:cid:"
APP_POSITION_PREFIX = b"a:pos:"
APP_NEXT_ORDER_ID_PREFIX = b"a:oid:"
FEE_DELTA_PREFIX = b"t:fee:"
APP_TRIGGER_PREFIX = b"a:trg:"
TRIGGER_PARAMS = b"a:tgp"
APP_TWAP_PREFIX = b"a:twp:"
APP_TWAP_DUE_PREFIX = b"a:twd:"
APP_TWAP_NEXT_ID_PREFIX = b"a:twn:"
TWAP_CARRY = b"a:twc"
TWAP_ID_SIZE = 8
FEE_PARAMS = b"a:fep"
RATE_LIMIT_PARAMS = b"a:rlp"
APP_ORACLE_PRICE_PREFIX = b"a:orc:"
APP_ORACLE_VOTE_PREFIX = b"a:ovt:"
ORACLE_PARAMS = b"a:orp"
FUNDING_PARAMS = b"a:fpr"
FUNDING_NEXT_TIME = b"a:fnx"
APP_FUNDING_MARKET_PREFIX = b"a:fmk:"
APP_FUNDING_POOL_PREFIX = b"a:fpl:"
LIQUIDATION_PARAMS = b"a:lqp"
LIQUIDATION_QUEUE = b"a:lqq"
APP_LIQUIDATION_MARK_PREFIX = b"a:lqm:"
APP_LIQUIDATION_HISTORY_PREFIX = b"a:lqh:"
LIQUIDATION_HISTORY_INDEX = b"a:lqi"
APP_HOLDER_PREFIX = b"a:hld:"
APP_BAND_UNKNOWN_PREFIX = b"a:hbu:"
APP_BAND_LOW_PREFIX = b"a:hbl:"
APP_BAND_HIGH_PREFIX = b"a:hbh:"
INSURANCE_PARAMS = b"a:inp"
APP_OWNER_MARKETS_PREFIX = b"a:pmk:"
APP_OPTION_SERIES_PREFIX = b"a:ops:"
APP_OPTION_MARK_PREFIX = b"a:opm:"
OPTION_PARAMS = b"a:opp"
APP_VOL_PREFIX = b"a:vol:"
APP_VOL_VOTE_PREFIX = b"a:vvt:"
VOL_PARAMS = b"a:vop"
BRIDGE_PARAMS = b"a:brp"
APP_BRIDGE_KEY_PREFIX = b"a:brk:"
BRIDGE_TOTALS = b"a:brt"
BRIDGE_VALSET_NONCE = b"a:bvn"
APP_BRIDGE_VALSET_PREFIX = b"a:bvs:"
APP_BRIDGE_VALSET_PENDING_PREFIX = b"a:bvp:"
APP_BRIDGE_VALSET_SIGNATURE_PREFIX = b"a:bvg:"
APP_BRIDGE_CREDITED_PREFIX = b"a:bdc:"
APP_BRIDGE_DEPOSIT_VOTE_PREFIX = b"a:bdv:"
APP_BRIDGE_WITHDRAWAL_PREFIX = b"a:bwd:"
APP_BRIDGE_WITHDRAWAL_PENDING_PREFIX = b"a:bwp:"
APP_BRIDGE_WITHDRAWAL_SIGNATURE_PREFIX = b"a:bws:"
APP_BRIDGE_WITHDRAWAL_NUMBER_PREFIX = b"a:bwn:"
EVM_ADDRESS_SIZE = 20
DEPOSIT_ID_SIZE = 32
VALSET_NONCE_SIZE = 8
WITHDRAWAL_NUMBER_SIZE = 8
WITHDRAWAL_ID_SIZE = OWNER_SIZE + WITHDRAWAL_NUMBER_SIZE

DERIVED_PREFIXES = (APP_CLIENT_ORDER_PREFIX, APP_OWNER_MARKETS_PREFIX)
"""The derived indexes (`execution.indexes`): application keys outside the state tree."""


def in_state_tree(key: bytes) -> bool:
    """Whether a change of the application key `key` goes into the state tree (the app hash): all
    but those of the derived indexes. (`a:meta` and `a:time`, outside it too, are not changes: the
    app writes them at commit.)"""
    return not key.startswith(DERIVED_PREFIXES)


def _fixed(value: int, size: int, what: str) -> bytes:
    """`value` as `size` big-endian bytes; ValueError outside [0, 2**(8*size)). `to_bytes`
    (unsigned) does the range check itself: it raises OverflowError for a negative or too large
    value, so the hot path computes no bound."""
    try:
        return value.to_bytes(size, "big")
    except OverflowError:
        raise ValueError(f"{what} {value} out of range") from None


_MARKET_ID_BYTES: dict[int, bytes] = {}
"""market id -> its 4 bytes, for the ids seen (markets are few; every key of the exchange has one)"""


def _owner(owner: bytes) -> bytes:
    if len(owner) != OWNER_SIZE:
        raise ValueError(f"an owner address is {OWNER_SIZE} bytes, got {len(owner)}")
    return owner


def market_id_bytes(market_id: int) -> bytes:
    raw = _MARKET_ID_BYTES.get(market_id)
    if raw is None:
        raw = _fixed(market_id, MARKET_ID_SIZE, "market id")
        if type(market_id) is int and len(_MARKET_ID_BYTES) < 4096:  # not a bool or an IntEnum
            _MARKET_ID_BYTES[market_id] = raw
    return raw


def market_key(market_id: int) -> bytes:
    return APP_MARKET_PREFIX + market_id_bytes(market_id)


def fee_delta_key(sender: bytes, nonce: int) -> bytes:
    """The trading fees one tx (its sender and nonce name it) owes the fee collector, summed into
    the collector's account at the end of the block and never stored (`execution.block`)."""
    return FEE_DELTA_PREFIX + _owner(sender) + _fixed(nonce, 8, "nonce")


END_BLOCK_FEE_DELTA = FEE_DELTA_PREFIX + bytes(28)
"""The fee delta of the end-of-block stages (triggered orders, the liquidation pass)."""


def next_order_id_key(market_id: int) -> bytes:
    """The counter of a market's order ids (resting, trigger and liquidation orders alike)."""
    return APP_NEXT_ORDER_ID_PREFIX + market_id_bytes(market_id)


def order_prefix(market_id: int) -> bytes:
    """Every resting order of one market, sorted by order id."""
    return APP_ORDER_PREFIX + market_id_bytes(market_id)


def order_key(market_id: int, order_id: int) -> bytes:
    return order_prefix(market_id) + _fixed(order_id, ORDER_ID_SIZE, "order id")


def trigger_prefix(market_id: int) -> bytes:
    """Every resting trigger order of one market, sorted by order id."""
    return APP_TRIGGER_PREFIX + market_id_bytes(market_id)


def trigger_key(market_id: int, order_id: int) -> bytes:
    return trigger_prefix(market_id) + _fixed(order_id, ORDER_ID_SIZE, "order id")


def twap_prefix(owner: bytes) -> bytes:
    """Every live TWAP of one owner, sorted by twap id."""
    return APP_TWAP_PREFIX + _owner(owner)


def twap_key(owner: bytes, twap_id: int) -> bytes:
    return twap_prefix(owner) + _fixed(twap_id, TWAP_ID_SIZE, "twap id")


def twap_due_prefix(height: int) -> bytes:
    """The TWAPs whose next slice is due at `height`, sorted by owner then twap id."""
    return APP_TWAP_DUE_PREFIX + height_bytes(height)


def twap_due_key(height: int, owner: bytes, twap_id: int) -> bytes:
    return twap_due_prefix(height) + _owner(owner) + _fixed(twap_id, TWAP_ID_SIZE, "twap id")


def twap_due_entry(key: bytes) -> tuple[int, bytes, int]:
    """(height, owner, twap id) of a `twap_due_key`."""
    at = len(APP_TWAP_DUE_PREFIX)
    body = key[at:]
    if not key.startswith(APP_TWAP_DUE_PREFIX) or len(body) != HEIGHT_SIZE + OWNER_SIZE + TWAP_ID_SIZE:
        raise ValueError(f"not a twap due key: {key!r}")
    return (
        int.from_bytes(body[:HEIGHT_SIZE], "big"),
        body[HEIGHT_SIZE : HEIGHT_SIZE + OWNER_SIZE],
        int.from_bytes(body[HEIGHT_SIZE + OWNER_SIZE :], "big"),
    )


def twap_next_id_key(owner: bytes) -> bytes:
    """The counter of one owner's twap ids (per owner: no key every TWAP placement writes)."""
    return APP_TWAP_NEXT_ID_PREFIX + _owner(owner)


def client_order_key(owner: bytes, market_id: int, client_id: int) -> bytes:
    return (
        APP_CLIENT_ORDER_PREFIX
        + _owner(owner)
        + market_id_bytes(market_id)
        + _fixed(client_id, CLIENT_ID_SIZE, "client id")
    )


def position_prefix(owner: bytes) -> bytes:
    """Every position of one owner, sorted by market id."""
    return APP_POSITION_PREFIX + _owner(owner)


def owner_markets_key(owner: bytes) -> bytes:
    """The markets on which one owner has a position record, so that its account figures read
    those positions only (not one key per market)."""
    return APP_OWNER_MARKETS_PREFIX + _owner(owner)


def position_key(owner: bytes, market_id: int) -> bytes:
    return position_prefix(owner) + market_id_bytes(market_id)


def market_id_from_position_key(key: bytes) -> int:
    body = key[len(APP_POSITION_PREFIX) :]
    if not key.startswith(APP_POSITION_PREFIX) or len(body) != OWNER_SIZE + MARKET_ID_SIZE:
        raise ValueError("not a position key")
    return int.from_bytes(body[OWNER_SIZE:], "big")


def oracle_price_key(market_id: int) -> bytes:
    return APP_ORACLE_PRICE_PREFIX + market_id_bytes(market_id)


def oracle_vote_prefix(market_id: int) -> bytes:
    """Every validator's vote on one market, sorted by validator address."""
    return APP_ORACLE_VOTE_PREFIX + market_id_bytes(market_id)


def oracle_vote_key(market_id: int, validator: bytes) -> bytes:
    return oracle_vote_prefix(market_id) + _owner(validator)


def validator_from_oracle_vote_key(key: bytes) -> bytes:
    body = key[len(APP_ORACLE_VOTE_PREFIX) :]
    if not key.startswith(APP_ORACLE_VOTE_PREFIX) or len(body) != MARKET_ID_SIZE + OWNER_SIZE:
        raise ValueError("not an oracle vote key")
    return body[MARKET_ID_SIZE:]


def option_series_key(market_id: int) -> bytes:
    return APP_OPTION_SERIES_PREFIX + market_id_bytes(market_id)


def option_mark_key(market_id: int) -> bytes:
    return APP_OPTION_MARK_PREFIX + market_id_bytes(market_id)


def vol_key(underlying_id: int, expiry_ns: int) -> bytes:
    """The implied volatility of one (underlying, expiry); keys of one underlying sort by expiry."""
    return APP_VOL_PREFIX + market_id_bytes(underlying_id) + _fixed(expiry_ns, HEIGHT_SIZE, "expiry")


def vol_vote_prefix(underlying_id: int, expiry_ns: int) -> bytes:
    """Every validator's vol vote on one (underlying, expiry), sorted by validator address."""
    return APP_VOL_VOTE_PREFIX + market_id_bytes(underlying_id) + _fixed(expiry_ns, HEIGHT_SIZE, "expiry")


def vol_vote_key(underlying_id: int, expiry_ns: int, validator: bytes) -> bytes:
    return vol_vote_prefix(underlying_id, expiry_ns) + _owner(validator)


def funding_market_key(market_id: int) -> bytes:
    """A market's funding record (`execution.positions.funding_index.MarketFunding`)."""
    return APP_FUNDING_MARKET_PREFIX + market_id_bytes(market_id)


def funding_pool_key(market_id: int) -> bytes:
    """A market's funding pool (`execution.positions.funding_index.FundingPool`), a holder of quote."""
    return APP_FUNDING_POOL_PREFIX + market_id_bytes(market_id)


def liquidation_mark_key(market_id: int) -> bytes:
    """What the liquidation pass last saw of a market (`execution.risk.liquidation`)."""
    return APP_LIQUIDATION_MARK_PREFIX + market_id_bytes(market_id)


def liquidation_history_key(height: int) -> bytes:
    """The liquidation records of the block at `height` (`execution.risk.history`)."""
    return APP_LIQUIDATION_HISTORY_PREFIX + height_bytes(height)


def holder_prefix(market_id: int) -> bytes:
    """Every holder of a non-zero position on one market, sorted by owner."""
    return APP_HOLDER_PREFIX + market_id_bytes(market_id)


def holder_key(market_id: int, owner: bytes) -> bytes:
    return holder_prefix(market_id) + _owner(owner)


def owner_from_holder_key(key: bytes) -> bytes:
    body = key[len(APP_HOLDER_PREFIX) :]
    if not key.startswith(APP_HOLDER_PREFIX) or len(body) != MARKET_ID_SIZE + OWNER_SIZE:
        raise ValueError("not a holder key")
    return body[MARKET_ID_SIZE:]


# -- bridge (`execution.bridge`) ----------------------------------------------------------------


def _sized(raw: bytes, size: int, what: str) -> bytes:
    if len(raw) != size:
        raise ValueError(f"{what} is {size} bytes, got {len(raw)}")
    return raw


def bridge_key_key(validator: bytes) -> bytes:
    """The bridge key (EVM address) of one validator."""
    return APP_BRIDGE_KEY_PREFIX + _owner(validator)


def bridge_valset_key(nonce: int) -> bytes:
    return APP_BRIDGE_VALSET_PREFIX + _fixed(nonce, VALSET_NONCE_SIZE, "valset nonce")


def bridge_valset_pending_key(nonce: int) -> bytes:
    return APP_BRIDGE_VALSET_PENDING_PREFIX + _fixed(nonce, VALSET_NONCE_SIZE, "valset nonce")


def bridge_valset_signature_prefix(nonce: int) -> bytes:
    """Every signature of valset `nonce`, sorted by the signer's EVM address."""
    return APP_BRIDGE_VALSET_SIGNATURE_PREFIX + _fixed(nonce, VALSET_NONCE_SIZE, "valset nonce")


def bridge_valset_signature_key(nonce: int, evm_address: bytes) -> bytes:
    return bridge_valset_signature_prefix(nonce) + _sized(evm_address, EVM_ADDRESS_SIZE, "an EVM address")


def bridge_credited_key(deposit_id: bytes) -> bytes:
    return APP_BRIDGE_CREDITED_PREFIX + _sized(deposit_id, DEPOSIT_ID_SIZE, "a deposit id")


def bridge_deposit_vote_prefix(deposit_id: bytes) -> bytes:
    """Every validator's vote on one deposit, sorted by validator address."""
    return APP_BRIDGE_DEPOSIT_VOTE_PREFIX + _sized(deposit_id, DEPOSIT_ID_SIZE, "a deposit id")


def bridge_deposit_vote_key(deposit_id: bytes, validator: bytes) -> bytes:
    return bridge_deposit_vote_prefix(deposit_id) + _owner(validator)


def withdrawal_id_bytes(withdrawal_id: int) -> bytes:
    """A withdrawal id as its 28 bytes: owner (20) and number (8-byte BE); ValueError if it does not fit."""
    return _fixed(withdrawal_id, WITHDRAWAL_ID_SIZE, "withdrawal id")


def bridge_withdrawal_owner_prefix(owner: bytes) -> bytes:
    """Every withdrawal of one owner, sorted by number."""
    return APP_BRIDGE_WITHDRAWAL_PREFIX + _owner(owner)


def bridge_withdrawal_key(withdrawal_id: int) -> bytes:
    return APP_BRIDGE_WITHDRAWAL_PREFIX + withdrawal_id_bytes(withdrawal_id)


def bridge_withdrawal_pending_key(withdrawal_id: int) -> bytes:
    return APP_BRIDGE_WITHDRAWAL_PENDING_PREFIX + withdrawal_id_bytes(withdrawal_id)


def bridge_withdrawal_signature_prefix(withdrawal_id: int) -> bytes:
    """Every signature of one withdrawal, sorted by the signer's EVM address."""
    return APP_BRIDGE_WITHDRAWAL_SIGNATURE_PREFIX + withdrawal_id_bytes(withdrawal_id)


def bridge_withdrawal_signature_key(withdrawal_id: int, evm_address: bytes) -> bytes:
    return bridge_withdrawal_signature_prefix(withdrawal_id) + _sized(
        evm_address, EVM_ADDRESS_SIZE, "an EVM address"
    )


def bridge_withdrawal_number_key(owner: bytes) -> bytes:
    """The counter of one owner's withdrawal numbers (per owner: no key every withdrawal writes)."""
    return APP_BRIDGE_WITHDRAWAL_NUMBER_PREFIX + _owner(owner)
