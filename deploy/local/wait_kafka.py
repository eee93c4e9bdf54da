"""Exit 0 once a Kafka broker answers a metadata request (used by kafka.sh; stdlib + aiokafka only)."""

import asyncio
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


async def main(bootstrap: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return 0
        except Exception as exc:  # any failure means "not yet"; the deadline decides
            if time.monotonic() > deadline:
                print(f"kafka at {bootstrap} not answering: {exc!r}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60)))
