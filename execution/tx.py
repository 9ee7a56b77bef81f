"""The transaction format: a signed envelope of one or more actions, its canonical bytes, its sign
bytes and its hash.

Wire form (canonical encoding, `primitives.codec`):

    tx       = [version=1, signer public key (32 bytes), nonce, actions, signature (64 bytes)]
    action   = [kind, fields...]                  first element: the action kind
    transfer = [1, to address (20 bytes), amount]  amount in quote units (micro-USD, 6 decimals)

The nonce is an integer of milliseconds (Hyperliquid style, see `execution.accounts`). The
signature is Ed25519 over `sign_bytes(b"derivd/tx/v1", chain_id, sign_payload)` where
`sign_payload = encode([version, public key, nonce, [action fields...]])`, so a tx signed for one
chain is a bad signature on any other. The tx hash is SHA-256 of the raw bytes.

`Tx.decode` checks structure only (types, sizes, field counts of known kinds); it keeps actions of
unknown kinds as `UnknownAction` so execution can answer UNKNOWN_ACTION, and leaves the rules of
meaning (1 to 64 actions, amount > 0, no transfer to self) to execution, which answers
INVALID_ACTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from primitives import codec
from primitives.batch_verify import SignedItem
from primitives.codec import DecodeError, Value
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Address, PrivateKey, PublicKey
from primitives.keys import sign_bytes as domain_sign_bytes

TX_VERSION = 1
TX_DOMAIN = b"derivd/tx/v1"
MAX_TX_BYTES = 64 * 1024
MAX_ACTIONS = 64
MAX_NONCE = 2**63 - 1
MAX_AMOUNT = 2**63 - 1


class ActionKind(IntEnum):
    """The first field of every action."""

    TRANSFER = 1


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move `amount` quote units (micro-USD) from the signer to `to`."""

    to: Address
    amount: int

    @property
    def kind(self) -> int:
        return ActionKind.TRANSFER

    def to_fields(self) -> Value:
        return [int(ActionKind.TRANSFER), self.to.raw, self.amount]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> Transfer:
        codec.field_list(fields, name, 3)
        to = codec.field_bytes(fields[1], f"{name}.to", ADDRESS_SIZE)
        amount = codec.field_int(fields[2], f"{name}.amount", 0, MAX_AMOUNT)
        return cls(Address(to), amount)


@dataclass(frozen=True, slots=True)
class UnknownAction:
    """An action of a kind this version does not know, kept as its canonical bytes."""

    kind: int
    encoded: bytes

    def to_fields(self) -> Value:
        return codec.decode(self.encoded)


Action = Transfer | UnknownAction


def decode_action(value: Value, name: str) -> Action:
    """One action from its decoded array; DecodeError names the field."""
    fields = codec.field_list(value, name)
    if not fields:
        raise DecodeError(f"{name}: expected at least the action kind")
    kind = codec.field_int(fields[0], f"{name}.kind")
    if kind == ActionKind.TRANSFER:
        return Transfer.from_fields(fields, name)
    return UnknownAction(kind, codec.encode(fields))


@dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction envelope."""

    signer: PublicKey
    nonce: int
    actions: tuple[Action, ...]
    signature: bytes
    version: int = TX_VERSION

    @property
    def sender(self) -> Address:
        """The account that signs, pays and whose nonce is used."""
        return self.signer.address

    def sign_payload(self) -> bytes:
        """The canonical bytes of everything but the signature."""
        return codec.encode(
            [self.version, self.signer.raw, self.nonce, [action.to_fields() for action in self.actions]]
        )

    def sign_bytes(self, chain_id: str) -> bytes:
        """The message the signature is over: domain tag, chain id and payload."""
        return domain_sign_bytes(TX_DOMAIN, chain_id, self.sign_payload())

    def signed_item(self, chain_id: str) -> SignedItem:
        """(public key, message, signature) for the batch verifier."""
        return (self.signer.raw, self.sign_bytes(chain_id), self.signature)

    def to_fields(self) -> Value:
        return [
            self.version,
            self.signer.raw,
            self.nonce,
            [action.to_fields() for action in self.actions],
            self.signature,
        ]

    def encode(self) -> bytes:
        return codec.encode(self.to_fields())

    @classmethod
    def decode(cls, raw: bytes) -> Tx:
        """Parse canonical tx bytes; DecodeError (naming the field) on anything else."""
        if isinstance(raw, bytes) and len(raw) > MAX_TX_BYTES:
            raise DecodeError(f"tx: {len(raw)} bytes exceed the limit of {MAX_TX_BYTES}")
        return cls.from_fields(codec.decode(raw, max_size=MAX_TX_BYTES))

    @classmethod
    def from_fields(cls, value: Value) -> Tx:
        f = codec.field_list(value, "tx", 5)
        version = codec.field_int(f[0], "tx.version")
        if version != TX_VERSION:
            raise DecodeError(f"tx.version: unsupported version {version}, expected {TX_VERSION}")
        signer = PublicKey(codec.field_bytes(f[1], "tx.signer", PUBLIC_KEY_SIZE))
        nonce = codec.field_int(f[2], "tx.nonce", 0, MAX_NONCE)
        items = codec.field_list(f[3], "tx.actions")
        actions = tuple(decode_action(item, f"tx.actions[{i}]") for i, item in enumerate(items))
        signature = codec.field_bytes(f[4], "tx.signature", SIGNATURE_SIZE)
        return cls(signer, nonce, actions, signature, version)

    @classmethod
    def create(cls, private_key: PrivateKey, chain_id: str, nonce: int, actions: tuple[Action, ...]) -> Tx:
        """A tx signed by `private_key` for `chain_id` (no rule of meaning is checked)."""
        unsigned = cls(private_key.public_key, nonce, actions, b"\x00" * SIGNATURE_SIZE)
        signature = private_key.sign(unsigned.sign_bytes(chain_id))
        return cls(private_key.public_key, nonce, actions, signature)


def build_tx(private_key: PrivateKey, chain_id: str, nonce: int, actions: Sequence[Action]) -> bytes:
    """The raw bytes of a signed tx, for clients (CLI, load generator, tests).

    Only the wire limits are enforced here (ValueError): the size and the integer ranges. The rules
    of meaning (1 to 64 actions, amount > 0, ...) are the application's to answer.
    """
    if not 0 <= nonce <= MAX_NONCE:
        raise ValueError(f"nonce {nonce} is outside [0, {MAX_NONCE}]")
    for action in actions:
        if isinstance(action, Transfer) and not 0 <= action.amount <= MAX_AMOUNT:
            raise ValueError(f"transfer amount {action.amount} is outside [0, {MAX_AMOUNT}]")
    raw = Tx.create(private_key, chain_id, nonce, tuple(actions)).encode()
    if len(raw) > MAX_TX_BYTES:
        raise ValueError(f"tx of {len(raw)} bytes exceeds the limit of {MAX_TX_BYTES}")
    return raw


def tx_hash(raw: bytes) -> bytes:
    """The tx hash: SHA-256 of its raw bytes (shown as upper-case hex in RPC)."""
    return sha256(raw)
