"""The JSON document of a transaction signed offline: what `--generate-only` prints, `tx sign`
signs and `tx broadcast` sends. It carries everything the signature covers, readable:

    {"body": {"chain_id": "...", "nonce": "<ms>", "fee": "<int>",
              "signer": {"address": "<hex>", "pub_key": {"type", "value"} | null},
              "actions": [{"type": "transfer", "to": "<hex>", "amount": "<int>"}, ...]},
     "signature": "<base64>" | null}

Actions (`type`: the action kind's name in lower case, e.g. `place_twap`, `cancel_twap`,
`place_scale`) have their `execution.tx` field names and raw units (quantums, subticks, micro-USD);
integers are decimal strings, addresses hex, `oracle_vote.prices` a list of [market_id, price],
`vol_vote.vols` a list of {"underlying": market id, "expiry": ns, "vol_ppm": ppm} (decimal strings
too: an expiry in ns is beyond a JSON double's exact integers). The subaccount switches are
`{"type": "use_subaccount", "number": "1"}` and `{"type": "use_isolated", "market_id": "1"}`.
The bridge's actions (`execution.bridge`) write EVM addresses as 0x EIP-55 (read in any case, but
a mixed-case one must pass its checksum), hashes and signatures as 0x lower-case hex, and ids,
chain ids and log indexes as decimal strings of up to 78 digits (uint256):
`{"type": "withdraw", "recipient": "0x..", "amount": "<micro-USD>"}`,
`{"type": "set_bridge_key", "evm_address": "0x..", "proof": "0x<65 bytes>"}`,
`{"type": "bridge_sign", "signatures": [{"target": "withdrawal" | "valset", "id", "signature"}]}`,
`{"type": "bridge_deposit_vote", "deposits": [{"evm_chain_id", "tx_hash", "log_index",
"depositor", "recipient" (a derivd address), "amount"}]}`.
`fee` is what the signer pays for the tx, in quote units (micro-USD; `execution.fees`: at least the
chain's minimum for its actions, else the chain refuses it with code 7, INSUFFICIENT_FEE).
`pub_key` may be null when the document was generated from an address: signing fills it in. The
document is read strictly (exact field sets; every field checked, naming it) and becomes wire
bytes only through `execution.tx`, so what is signed is exactly what the JSON shows.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from execution.bridge.deposits import claim_json
from execution.bridge.evm import format_evm_address
from execution.tx import (
    MAX_FEE,
    MAX_NONCE,
    MAX_TX_BYTES,
    Action,
    ActionKind,
    AmendOrder,
    BridgeDepositVote,
    BridgeSign,
    BridgeSignature,
    CancelAll,
    CancelOrder,
    CancelTwap,
    DepositClaim,
    Liquidate,
    OracleVote,
    PlaceOrder,
    PlaceScale,
    PlaceTrigger,
    PlaceTwap,
    SetBridgeKey,
    SignTarget,
    Transfer,
    Tx,
    UnknownAction,
    UseIsolated,
    UseSubaccount,
    VolVote,
    Withdraw,
    decode_action,
)
from node.sdk.core import evm_address
from node.sdk.errors import InputError
from primitives.codec import DecodeError, Value
from primitives.keyfile import PUB_KEY_TYPE
from primitives.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Address, PrivateKey, PublicKey

_CLASSES: dict[ActionKind, type[Action]] = {
    ActionKind.TRANSFER: Transfer,
    ActionKind.PLACE_ORDER: PlaceOrder,
    ActionKind.CANCEL_ORDER: CancelOrder,
    ActionKind.CANCEL_ALL: CancelAll,
    ActionKind.AMEND_ORDER: AmendOrder,
    ActionKind.ORACLE_VOTE: OracleVote,
    ActionKind.LIQUIDATE: Liquidate,
    ActionKind.PLACE_TRIGGER: PlaceTrigger,
    ActionKind.VOL_VOTE: VolVote,
    ActionKind.PLACE_TWAP: PlaceTwap,
    ActionKind.CANCEL_TWAP: CancelTwap,
    ActionKind.PLACE_SCALE: PlaceScale,
    ActionKind.USE_SUBACCOUNT: UseSubaccount,
    ActionKind.USE_ISOLATED: UseIsolated,
    ActionKind.BRIDGE_DEPOSIT_VOTE: BridgeDepositVote,
    ActionKind.WITHDRAW: Withdraw,
    ActionKind.BRIDGE_SIGN: BridgeSign,
    ActionKind.SET_BRIDGE_KEY: SetBridgeKey,
}
_ADDRESS_FIELDS = frozenset({"to", "account"})
_PRICES_FIELD = "prices"
_VOLS_FIELD = "vols"
_VOL_KEYS = ("underlying", "expiry", "vol_ppm")
_EVM_ADDRESS_FIELDS = frozenset({"recipient", "evm_address", "depositor"})
"""EVM addresses, except the deposit's `recipient`, which is a derivd address"""
_HEX_FIELDS = frozenset({"proof", "tx_hash", "signature"})
_DEPOSIT_KEYS = ("evm_chain_id", "tx_hash", "log_index", "depositor", "recipient", "amount")
_SIGNATURE_KEYS = ("target", "id", "signature")
_TARGETS = {target.name.lower(): target for target in SignTarget}
MAX_UINT256_DIGITS = 78
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


class TxDocumentError(ValueError):
    """A document that cannot be read or signed; the message names the field."""


def _type_name(kind: ActionKind) -> str:
    return kind.name.lower()


_KINDS = {_type_name(kind): kind for kind in _CLASSES}
_BRIDGE_KINDS = frozenset(
    {ActionKind.WITHDRAW, ActionKind.SET_BRIDGE_KEY, ActionKind.BRIDGE_SIGN, ActionKind.BRIDGE_DEPOSIT_VOTE}
)


def action_to_json(action: Action) -> dict[str, Any]:
    """`action` as {"type", <field>: <value>...}."""
    if isinstance(action, UnknownAction):
        raise TxDocumentError(f"an action of unknown kind {action.kind} has no JSON form")
    out: dict[str, Any] = {"type": _type_name(ActionKind(action.kind))}
    for field in dataclasses.fields(action):
        value = getattr(action, field.name)
        if field.name in _ADDRESS_FIELDS:
            out[field.name] = str(value)
        elif field.name == _PRICES_FIELD:
            out[field.name] = [[str(market_id), str(price)] for market_id, price in value]
        elif field.name == _VOLS_FIELD:
            out[field.name] = [{k: str(v) for k, v in zip(_VOL_KEYS, entry, strict=True)} for entry in value]
        else:
            out[field.name] = _bridge_value_json(field.name, value)
    return out


def _bridge_value_json(name: str, value: Any) -> Any:
    """A field of any action but the address, price and vol lists: integers as decimal strings,
    and the bridge's EVM addresses, byte strings and lists."""
    if name in _EVM_ADDRESS_FIELDS and isinstance(value, bytes):
        return format_evm_address(value)
    if name in _HEX_FIELDS:
        return "0x" + value.hex()
    if name == "deposits":
        return [claim_json(claim) for claim in value]
    if name == "signatures":
        return [
            {
                "target": entry.target.name.lower(),
                "id": str(entry.id),
                "signature": "0x" + entry.signature.hex(),
            }
            for entry in value
        ]
    return str(value)


def action_from_json(obj: object, where: str) -> Action:
    """The action `obj` describes, with the wire format's checks (`execution.tx.decode_action`)."""
    if not isinstance(obj, dict):
        raise TxDocumentError(f"{where}: must be an object")
    name = obj.get("type")
    if name not in _KINDS:
        raise TxDocumentError(f"{where}.type: must be one of {', '.join(_KINDS)}, got {name!r}")
    kind = _KINDS[name]
    names = [field.name for field in dataclasses.fields(_CLASSES[kind])]
    _exact(obj, where, {"type", *names})
    if kind in _BRIDGE_KINDS:
        return _bridge_action(kind, obj, where)
    fields: list[Value] = [int(kind)]
    for field in names:
        value, at = obj[field], f"{where}.{field}"
        if field in _ADDRESS_FIELDS:
            fields.append(_address(value, at).raw)
        elif field == _PRICES_FIELD:
            if not isinstance(value, list):
                raise TxDocumentError(f"{at}: must be a list of [market_id, price]")
            pairs: list[Value] = []
            for i, pair in enumerate(value):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise TxDocumentError(f"{at}[{i}]: must be [market_id, price]")
                pairs.append([_integer(pair[0], f"{at}[{i}][0]"), _integer(pair[1], f"{at}[{i}][1]")])
            fields.append(pairs)
        elif field == _VOLS_FIELD:
            fields.append(_vols(value, at))
        else:
            fields.append(_integer(value, at))
    try:
        return decode_action(fields, where)
    except DecodeError as exc:
        raise TxDocumentError(str(exc)) from None


@dataclass(frozen=True, kw_only=True, slots=True)
class TxDocument:
    """A transaction to sign or signed, with its chain id (which the signature covers but the wire
    bytes do not carry)."""

    chain_id: str
    nonce: int
    fee: int
    """quote units the signer pays for the tx"""
    signer: Address
    pub_key: PublicKey | None
    actions: tuple[Action, ...]
    signature: bytes | None = None

    @classmethod
    def unsigned(
        cls,
        *,
        chain_id: str,
        nonce: int,
        fee: int,
        signer: Address,
        pub_key: PublicKey | None,
        actions: tuple[Action, ...],
    ) -> TxDocument:
        """A document to sign, checked as `from_json` would check it."""
        doc = cls(chain_id=chain_id, nonce=nonce, fee=fee, signer=signer, pub_key=pub_key, actions=actions)
        return cls.from_json(doc.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "body": {
                "chain_id": self.chain_id,
                "nonce": str(self.nonce),
                "fee": str(self.fee),
                "signer": {
                    "address": str(self.signer),
                    "pub_key": None
                    if self.pub_key is None
                    else {"type": PUB_KEY_TYPE, "value": base64.b64encode(self.pub_key.raw).decode()},
                },
                "actions": [action_to_json(action) for action in self.actions],
            },
            "signature": None if self.signature is None else base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, obj: object) -> TxDocument:
        """Read a document; TxDocumentError names the first wrong field."""
        if not isinstance(obj, dict) or "body" not in obj:
            raise TxDocumentError('not a derivd transaction document: expected {"body", "signature"}')
        _exact(obj, "document", {"body", "signature"})
        body = obj["body"]
        if not isinstance(body, dict):
            raise TxDocumentError("body: must be an object")
        _exact(body, "body", {"chain_id", "nonce", "fee", "signer", "actions"})
        chain_id = body["chain_id"]
        if not isinstance(chain_id, str) or not chain_id:
            raise TxDocumentError("body.chain_id: must be a non-empty string")
        nonce = _integer(body["nonce"], "body.nonce")
        if nonce > MAX_NONCE:
            raise TxDocumentError(f"body.nonce: {nonce} is outside [0, {MAX_NONCE}]")
        fee = _integer(body["fee"], "body.fee")
        if fee > MAX_FEE:
            raise TxDocumentError(f"body.fee: {fee} is outside [0, {MAX_FEE}]")
        signer = body["signer"]
        if not isinstance(signer, dict):
            raise TxDocumentError("body.signer: must be an object")
        _exact(signer, "body.signer", {"address", "pub_key"})
        address = _address(signer["address"], "body.signer.address")
        pub_key = None if signer["pub_key"] is None else _pub_key(signer["pub_key"], "body.signer.pub_key")
        if pub_key is not None and pub_key.address != address:
            raise TxDocumentError(f"body.signer: pub_key is the key of {pub_key.address}, not of {address}")
        items = body["actions"]
        if not isinstance(items, list) or not items:
            raise TxDocumentError("body.actions: must be a non-empty list")
        actions = tuple(action_from_json(item, f"body.actions[{i}]") for i, item in enumerate(items))
        signature = obj["signature"]
        if signature is not None:
            signature = _base64(signature, "signature")
            if len(signature) != SIGNATURE_SIZE:
                raise TxDocumentError(f"signature: must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
        doc = cls(
            chain_id=chain_id,
            nonce=nonce,
            fee=fee,
            signer=address,
            pub_key=pub_key,
            actions=actions,
            signature=signature,
        )
        size = len(doc._tx(bytes(SIGNATURE_SIZE), PublicKey(bytes(PUBLIC_KEY_SIZE))).encode())
        if size > MAX_TX_BYTES:
            raise TxDocumentError(f"the transaction is {size} bytes, over the limit of {MAX_TX_BYTES}")
        return doc

    def _tx(self, signature: bytes, pub_key: PublicKey) -> Tx:
        return Tx(pub_key, self.nonce, self.actions, signature, self.fee)

    def sign(self, key: PrivateKey) -> TxDocument:
        """This document signed by `key`, which must be its signer's."""
        if key.address != self.signer:
            raise TxDocumentError(f"the key's address {key.address} is not the signer {self.signer}")
        unsigned = self._tx(bytes(SIGNATURE_SIZE), key.public_key)
        signature = key.sign(unsigned.sign_bytes(self.chain_id))
        return dataclasses.replace(self, pub_key=key.public_key, signature=signature)

    def raw(self) -> bytes:
        """The signed tx's wire bytes; TxDocumentError if it is unsigned or its signature does not
        verify (the document was changed after signing)."""
        if self.signature is None or self.pub_key is None:
            raise TxDocumentError("the transaction is not signed (run `derivd tx sign` first)")
        tx = self._tx(self.signature, self.pub_key)
        if not self.pub_key.verify(tx.sign_bytes(self.chain_id), self.signature):
            raise TxDocumentError(
                "signature: does not verify against the body (it was changed after signing, "
                "or signed for another chain id)"
            )
        return tx.encode()


def _exact(obj: dict[str, Any], where: str, keys: set[str]) -> None:
    if set(obj) != keys:
        extra, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
        parts = ([f"unknown field(s) {', '.join(extra)}"] if extra else []) + (
            [f"missing field(s) {', '.join(missing)}"] if missing else []
        )
        raise TxDocumentError(f"{where}: {'; '.join(parts)}")


def _vols(value: object, where: str) -> list[Value]:
    """The wire entries of `vol_vote.vols`: a list of {"underlying", "expiry", "vol_ppm"}."""
    if not isinstance(value, list):
        raise TxDocumentError(f"{where}: must be a list of {{underlying, expiry, vol_ppm}}")
    entries: list[Value] = []
    for i, entry in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise TxDocumentError(f"{at}: must be an object {{underlying, expiry, vol_ppm}}")
        _exact(entry, at, set(_VOL_KEYS))
        entries.append([_integer(entry[key], f"{at}.{key}") for key in _VOL_KEYS])
    return entries


def _objects(value: object, where: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A list of objects with exactly `keys`."""
    if not isinstance(value, list):
        raise TxDocumentError(f"{where}: must be a list of {{{', '.join(keys)}}}")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise TxDocumentError(f"{where}[{i}]: must be an object {{{', '.join(keys)}}}")
        _exact(entry, f"{where}[{i}]", set(keys))
    return value


def _bridge_action(kind: ActionKind, obj: dict[str, Any], where: str) -> Action:
    """A bridge action from its JSON form (exact fields already checked), then through the wire
    format's checks (`execution.tx.decode_action` of its fields)."""
    action: Action
    try:
        if kind == ActionKind.WITHDRAW:
            recipient = _evm_address(obj["recipient"], f"{where}.recipient")
            action = Withdraw(recipient, _integer(obj["amount"], f"{where}.amount"))
        elif kind == ActionKind.SET_BRIDGE_KEY:
            address = _evm_address(obj["evm_address"], f"{where}.evm_address")
            action = SetBridgeKey(address, _hex(obj["proof"], f"{where}.proof"))
        elif kind == ActionKind.BRIDGE_SIGN:
            action = BridgeSign(_signatures(obj["signatures"], f"{where}.signatures"))
        else:
            action = BridgeDepositVote(_deposits(obj["deposits"], f"{where}.deposits"))
        return decode_action(action.to_fields(), where)
    except (DecodeError, ValueError) as exc:
        if isinstance(exc, TxDocumentError):
            raise
        raise TxDocumentError(str(exc)) from None


def _deposits(value: object, where: str) -> tuple[DepositClaim, ...]:
    """`bridge_deposit_vote.deposits`."""
    claims: list[DepositClaim] = []
    for i, entry in enumerate(_objects(value, where, _DEPOSIT_KEYS)):
        at = f"{where}[{i}]"
        claims.append(
            DepositClaim(
                evm_chain_id=_integer(entry["evm_chain_id"], f"{at}.evm_chain_id", MAX_UINT256_DIGITS),
                tx_hash=_hex(entry["tx_hash"], f"{at}.tx_hash"),
                log_index=_integer(entry["log_index"], f"{at}.log_index", MAX_UINT256_DIGITS),
                depositor=_evm_address(entry["depositor"], f"{at}.depositor"),
                recipient=_address(entry["recipient"], f"{at}.recipient"),
                amount=_integer(entry["amount"], f"{at}.amount"),
            )
        )
    return tuple(claims)


def _signatures(value: object, where: str) -> tuple[BridgeSignature, ...]:
    """`bridge_sign.signatures`."""
    entries: list[BridgeSignature] = []
    for i, entry in enumerate(_objects(value, where, _SIGNATURE_KEYS)):
        at = f"{where}[{i}]"
        target = entry["target"]
        if target not in _TARGETS:
            raise TxDocumentError(f"{at}.target: must be one of {', '.join(_TARGETS)}, got {target!r}")
        number = _integer(entry["id"], f"{at}.id", MAX_UINT256_DIGITS)
        signature = _hex(entry["signature"], f"{at}.signature")
        try:
            entries.append(BridgeSignature(target=_TARGETS[target], id=number, signature=signature))
        except ValueError as exc:
            raise TxDocumentError(f"{at}.id: {exc}") from None
    return tuple(entries)


def _evm_address(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise TxDocumentError(f"{where}: must be an EVM address (0x and 40 hex digits)")
    try:
        return evm_address(value, where)
    except InputError as exc:
        raise TxDocumentError(str(exc)) from None


def _hex(value: object, where: str) -> bytes:
    """0x-prefixed hex (the wire decode checks the length)."""
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise TxDocumentError(f"{where}: must be 0x and an even number of hex digits, got {value!r}")
    return bytes.fromhex(value[2:])


def _integer(value: object, where: str, max_digits: int = 20) -> int:
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or len(value) > max_digits:
        raise TxDocumentError(f"{where}: must be a non-negative integer as a decimal string, got {value!r}")
    return int(value)


def _address(value: object, where: str) -> Address:
    if not isinstance(value, str):
        raise TxDocumentError(f"{where}: must be an address (40 hex digits)")
    try:
        return Address.parse(value)
    except ValueError as exc:
        raise TxDocumentError(f"{where}: {exc}") from None


def _base64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise TxDocumentError(f"{where}: must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise TxDocumentError(f"{where}: not valid base64") from None


def _pub_key(value: object, where: str) -> PublicKey:
    if not isinstance(value, dict) or set(value) != {"type", "value"} or value["type"] != PUB_KEY_TYPE:
        raise TxDocumentError(f"{where}: must be {{type: {PUB_KEY_TYPE}, value}} or null")
    raw = _base64(value["value"], f"{where}.value")
    if len(raw) != PUBLIC_KEY_SIZE:
        raise TxDocumentError(f"{where}.value: must be {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    return PublicKey(raw)
