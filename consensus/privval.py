"""The file private validator: the validator's signing key and its double-sign guard.

Files and formats follow CometBFT's FilePV: `config/priv_validator_key.json` holds the key and
`data/priv_validator_state.json` the last signed (height, round, step, signature, sign bytes),
steps 1 propose, 2 prevote, 3 precommit. Before a signature is released the new state is on disk
(temporary file, fsync, rename, directory fsync). A request that regresses (height, round, step)
is refused; one for the same (height, round, step) is answered with the stored signature if the
sign bytes are the same, or differ only in the timestamp (then the stored timestamp is used),
and refused otherwise. So the validator never signs two different things for one step, across
crashes and restarts too. If the state cannot be saved (a full disk), the signature is not
released and every later request is refused (`SignStateWriteError`): the node stops.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from consensus.types import Proposal, Vote, VoteType
from primitives.codec import DecodeError, Value, decode, field_list
from primitives.files import DurableFile, OSFile, remedy
from primitives.keyfile import KeyFileError, load_key_file, save_key_file
from primitives.keys import PrivateKey, PublicKey

STEP_PROPOSE = 1
STEP_PREVOTE = 2
STEP_PRECOMMIT = 3


class DoubleSignError(RuntimeError):
    """A signing request that conflicts with what this validator already signed."""


class PrivValError(ValueError):
    """A key or state file that cannot be used; the message names the file and the problem."""


class SignStateWriteError(PrivValError):
    """The last-sign state could not be saved, so nothing was signed; the message names the file,
    the OS error and what to do."""


@dataclass(frozen=True, slots=True)
class LastSignState:
    height: int = 0
    round: int = 0
    step: int = 0
    signature: bytes = b""
    sign_bytes: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "height": str(self.height),
            "round": self.round,
            "step": self.step,
            "signature": base64.b64encode(self.signature).decode() if self.signature else None,
            "signbytes": self.sign_bytes.hex().upper() if self.sign_bytes else None,
        }

    @classmethod
    def from_json(cls, obj: Any, source: str) -> LastSignState:
        if not isinstance(obj, dict):
            raise PrivValError(f"{source}: expected a JSON object")
        try:
            height = int(obj.get("height", 0))
            round_ = int(obj.get("round", 0))
            step = int(obj.get("step", 0))
            signature = base64.b64decode(obj.get("signature") or "", validate=True)
            sign_bytes = bytes.fromhex(obj.get("signbytes") or "")
        except (ValueError, TypeError) as exc:
            raise PrivValError(f"{source}: malformed field: {exc}") from exc
        if height < 0 or round_ < 0 or not 0 <= step <= STEP_PRECOMMIT:
            raise PrivValError(f"{source}: height, round or step out of range")
        return cls(height, round_, step, signature, sign_bytes)


def _vote_step(vote: Vote) -> int:
    return STEP_PREVOTE if vote.type == VoteType.PREVOTE else STEP_PRECOMMIT


def _without_timestamp(sign_bytes: bytes) -> tuple[Value, int] | None:
    """The signed structure with its timestamp blanked, and the timestamp; None if unreadable."""
    try:
        outer = field_list(decode(sign_bytes), "sign bytes", 3)
        payload = outer[2]
        if not isinstance(payload, bytes):
            return None
        fields = field_list(decode(payload), "payload")
    except DecodeError:
        return None
    timestamp = fields[-1]
    if not isinstance(timestamp, int):
        return None
    return [outer[0], outer[1], fields[:-1]], timestamp


class FilePrivValidator:
    """Signs proposals and votes, guarding against double signing with a persisted state."""

    def __init__(self, key: PrivateKey, state_file: DurableFile, state: LastSignState) -> None:
        self.key = key
        self.state_file = state_file
        self.last = state
        self._failure: str | None = None
        """set by a failed save of the state: no signing after it"""

    @property
    def address(self) -> bytes:
        return self.key.address.raw

    @property
    def public_key(self) -> PublicKey:
        return self.key.public_key

    # -- files -----------------------------------------------------------------------------------

    @classmethod
    def generate(cls, key_path: Path, state_path: Path) -> FilePrivValidator:
        """Create a new key and an empty state (`derivd init`); refuses to overwrite a key."""
        if key_path.exists():
            raise PrivValError(f"{key_path}: already exists; refusing to overwrite a validator key")
        key = PrivateKey.generate()
        save_key_file(key_path, key)
        state_file = OSFile(state_path)
        if not state_file.read():
            state_file.replace(_dump(LastSignState().to_json()))
        return cls(key, state_file, LastSignState())

    @classmethod
    def load(cls, key_path: Path, state_path: Path) -> FilePrivValidator:
        try:
            key = load_key_file(key_path)
        except KeyFileError as exc:
            raise PrivValError(str(exc)) from exc
        return cls(key, OSFile(state_path), load_sign_state(OSFile(state_path)))

    def reset_state(self) -> None:
        """Forget what was signed (`unsafe-reset-all`)."""
        self.last = LastSignState()
        self.state_file.replace(_dump(self.last.to_json()))

    # -- signing ---------------------------------------------------------------------------------

    def signed_past(self, height: int, round_: int, step: int) -> bool:
        """Whether (height, round, step) is before the last signed step (a request for it would
        be refused as a regression)."""
        return (height, round_, step) < (self.last.height, self.last.round, self.last.step)

    def vote_signed_past(self, vote: Vote) -> bool:
        return self.signed_past(vote.height, vote.round, _vote_step(vote))

    def proposal_signed_past(self, proposal: Proposal) -> bool:
        return self.signed_past(proposal.height, proposal.round, STEP_PROPOSE)

    def sign_vote(self, chain_id: str, vote: Vote) -> Vote:
        """The vote with its signature; raises DoubleSignError on a conflicting request."""
        message = vote.sign_bytes(chain_id)
        reuse = self._check(vote.height, vote.round, _vote_step(vote), message)
        if reuse is not None:
            signature, timestamp = reuse
            return replace(vote, timestamp=timestamp, signature=signature)
        signature = self._sign_and_save(vote.height, vote.round, _vote_step(vote), message)
        return vote.with_signature(signature)

    def sign_proposal(self, chain_id: str, proposal: Proposal) -> Proposal:
        message = proposal.sign_bytes(chain_id)
        reuse = self._check(proposal.height, proposal.round, STEP_PROPOSE, message)
        if reuse is not None:
            signature, timestamp = reuse
            return replace(proposal, timestamp=timestamp, signature=signature)
        signature = self._sign_and_save(proposal.height, proposal.round, STEP_PROPOSE, message)
        return proposal.with_signature(signature)

    def _check(self, height: int, round_: int, step: int, message: bytes) -> tuple[bytes, int] | None:
        """None to sign afresh, or (signature, timestamp) to answer with what was signed."""
        last = self.last
        hrs, last_hrs = (height, round_, step), (last.height, last.round, last.step)
        if hrs < last_hrs:
            raise DoubleSignError(f"refusing to sign {hrs}: already signed at {last_hrs} (regression)")
        if hrs > last_hrs or not last.sign_bytes:
            return None
        if message == last.sign_bytes:
            stored = _without_timestamp(last.sign_bytes)
            return last.signature, stored[1] if stored is not None else 0
        ours, stored = _without_timestamp(message), _without_timestamp(last.sign_bytes)
        if ours is not None and stored is not None and ours[0] == stored[0]:
            return last.signature, stored[1]
        raise DoubleSignError(
            f"refusing to sign conflicting data at height {height} round {round_} step {step}"
        )

    def _sign_and_save(self, height: int, round_: int, step: int, message: bytes) -> bytes:
        if self._failure is not None:
            raise SignStateWriteError(self._failure)
        signature = self.key.sign(message)
        new_state = LastSignState(height, round_, step, signature, message)
        try:
            self.state_file.replace(_dump(new_state.to_json()))
        except OSError as exc:
            # Whether the file now holds the old state or (the rename done, its directory not
            # synced) the new one, this process signs nothing more: the signature is dropped.
            self._failure = (
                f"cannot save the validator's sign state {self.state_file.name}: "
                f"{exc.strerror or exc}; nothing was signed; {remedy(exc)}"
            )
            raise SignStateWriteError(self._failure) from exc
        self.last = new_state
        return signature


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def load_sign_state(state_file: DurableFile) -> LastSignState:
    """The last signed state in `state_file`, written empty if the file does not exist."""
    try:
        raw = state_file.read()
    except OSError as exc:
        raise PrivValError(f"{state_file.name}: unreadable: {exc}") from exc
    if not raw:
        state = LastSignState()
        try:
            state_file.replace(_dump(state.to_json()))
        except OSError as exc:
            reason = exc.strerror or exc
            raise SignStateWriteError(
                f"cannot write the validator's sign state {state_file.name}: {reason}; {remedy(exc)}"
            ) from exc
        return state
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise PrivValError(f"{state_file.name}: unreadable: {exc}") from exc
    return LastSignState.from_json(obj, state_file.name)
