"""Book-stream subscribers for `derivd bench throughput --book-subscribers N`: N WebSocket
connections to one node, each subscribed to one market's book (`node.streams`), run in a
process of their own (`python -m node.bench_streams URL MARKET COUNT SECONDS`): it prints
`ready` once every connection has its snapshot, then, SECONDS later, one JSON object.

Each message's latency is the subscriber's wall clock when the message is read minus the node's
`published` stamp (taken at commit, when the stream's messages are built): one machine, one
clock. It includes the time the subscriber process takes to get to the message among COUNT
connections (its own CPU share is reported, `cpu_seconds`), so the figure bounds what a client
on its own machine sees from above. Sequence gaps and connections the node dropped are counted.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    messages: int = 0
    snapshots: int = 0
    gaps: int = 0
    closed: int = 0
    failed: list[str] = field(default_factory=list)


async def _follow(url: str, market: str, deadline: float, tally: _Tally, count: int) -> None:
    try:
        async with open_websocket_url(url, message_queue_size=10_000) as ws:
            params = {"stream": "book", "market": market}
            request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": params}
            await ws.send_message(json.dumps(request))
            seq = -1
            with trio.move_on_at(deadline):
                while True:
                    raw = await ws.get_message()
                    now = time.time_ns()
                    message = json.loads(raw)
                    if "error" in message:
                        tally.failed.append(str(message["error"].get("data")))
                        _settled(tally, count)
                        return
                    result = message.get("result")
                    if not result:
                        continue  # the reply to subscribe
                    data = result["data"]
                    if data["type"] == "snapshot":
                        tally.snapshots += 1
                        _settled(tally, count)
                    else:
                        tally.messages += 1
                        tally.latencies_ns.append(now - int(result["published"]))
                        if data["seq"] != seq + 1:
                            tally.gaps += 1
                    seq = data["seq"]
    except ConnectionClosed:
        tally.closed += 1
    except (OSError, HandshakeError) as exc:
        tally.failed.append(str(exc))
        _settled(tally, count)


def _settled(tally: _Tally, count: int) -> None:
    """Print `ready` once every connection has its snapshot or has failed."""
    if tally.snapshots + len(tally.failed) == count:
        print("ready", flush=True)


async def _run(url: str, market: str, count: int, seconds: float) -> _Tally:
    tally = _Tally()
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(_follow, url, market, deadline, tally, count)
    return tally


def main() -> None:
    url, market, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    tally = trio.run(_run, url, market, count, seconds)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "latencies_ns": tally.latencies_ns,
                "messages": tally.messages,
                "snapshots": tally.snapshots,
                "gaps": tally.gaps,
                "closed": tally.closed,
                "failed": tally.failed[:5],
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }
        )
    )


if __name__ == "__main__":
    main()
