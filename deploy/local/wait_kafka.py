"""Exit 0 once a Kafka broker answers metadata requests and can coordinate consumer groups.

Used by kafka.sh. A freshly formatted broker answers metadata at once but creates its
__consumer_offsets topic only on the first group request, and until that topic's partitions are
loaded every consumer group sees GroupCoordinatorNotAvailable; on a busy 2-core machine that
took long enough to fail tests. Asking for a coordinator here makes `up` wait for it.
"""

import asyncio
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


async def main(bootstrap: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            await admin.find_coordinator("promptpulse-readiness")
            return 0
        except Exception as exc:  # any failure means "not yet"; the deadline decides
            if time.monotonic() > deadline:
                print(f"kafka at {bootstrap} not ready: {exc!r}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60)))
