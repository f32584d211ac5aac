#!/usr/bin/env python3
"""An independent Kafka client for weir's tests and benchmarks: confluent-kafka (librdkafka's
Python binding, from PyPI), installed by scripts/test.sh into ~/.cache/weir-tools/venv.

  kafka-check.py BROKERS create TOPIC PARTITIONS
  kafka-check.py BROKERS produce TOPIC [--partitions N]      lines on stdin, round-robin over N partitions
  kafka-check.py BROKERS consume TOPIC [--expect N] [--idle S] [--timeout S]
        every record a read_committed consumer sees, from the start, as JSON lines
        {"partition", "offset", "key", "value"}; stops after N records, or when nothing came for S s
  kafka-check.py BROKERS lag TOPIC GROUP                     the group's committed offsets, as JSON
  kafka-check.py BROKERS bench-consume TOPIC N               seconds to read N records (librdkafka's own speed)
  kafka-check.py BROKERS bench-produce TOPIC N SIZE          seconds to write N records of SIZE bytes
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create(brokers, topic, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    for _, f in admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)]).items():
        try:
            f.result(30)
        except KafkaException as e:
            if "already exists" not in str(e).lower() and "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def produce(brokers, topic, partitions):
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    n = 0
    for line in sys.stdin:
        p.produce(topic, value=line.rstrip("\n").encode(), partition=n % partitions)
        n += 1
        if n % 10000 == 0:
            p.poll(0)
    left = p.flush(60)
    if left:
        sys.exit(f"{left} records were not delivered")
    print(n)


def partitions_of(consumer, topic):
    md = consumer.list_topics(topic, timeout=30)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        sys.exit(f"topic {topic}: {t.error if t else 'missing'}")
    return sorted(t.partitions)


def consume(brokers, topic, expect, idle, timeout):
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "kafka-check",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(topic, p, 0) for p in partitions_of(c, topic)])
    n, last, start = 0, time.time(), time.time()
    while time.time() - last < idle and time.time() - start < timeout and (expect is None or n < expect):
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            print(f"consumer: {m.error()}", file=sys.stderr)
            continue
        key = m.key().decode() if m.key() is not None else None
        value = m.value().decode() if m.value() is not None else None
        print(json.dumps({"partition": m.partition(), "offset": m.offset(), "key": key, "value": value}))
        n += 1
        last = time.time()
    c.close()


def lag(brokers, topic, group):
    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    got = c.committed([TopicPartition(topic, p) for p in partitions_of(c, topic)], timeout=30)
    print(json.dumps({str(tp.partition): tp.offset for tp in got}))


def bench_consume(brokers, topic, n):
    # noida-db answers a fetch with all it has, whatever fetch.max.bytes says: allow large answers.
    c = Consumer({"bootstrap.servers": brokers, "group.id": "kafka-bench", "enable.auto.commit": False,
                  "receive.message.max.bytes": 1000000000})
    c.assign([TopicPartition(topic, p, 0) for p in partitions_of(c, topic)])
    got, start = 0, time.time()
    while got < n:
        msgs = c.consume(10000, 1.0)
        got += sum(1 for m in msgs if not m.error())
        if time.time() - start > 600:
            sys.exit("timed out")
    print(f"{time.time() - start:.3f}")


def bench_produce(brokers, topic, n, size):
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    value = b"x" * size
    start = time.time()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(600)
    print(f"{time.time() - start:.3f}")


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    brokers, cmd, topic, rest = argv[0], argv[1], argv[2], argv[3:]
    opt = lambda name, default: type(default)(rest[rest.index(name) + 1]) if name in rest else default  # noqa: E731
    if cmd == "create":
        create(brokers, topic, rest[0])
    elif cmd == "produce":
        produce(brokers, topic, opt("--partitions", 1))
    elif cmd == "consume":
        expect = int(rest[rest.index("--expect") + 1]) if "--expect" in rest else None
        consume(brokers, topic, expect, opt("--idle", 3.0), opt("--timeout", 120.0))
    elif cmd == "lag":
        lag(brokers, topic, rest[0])
    elif cmd == "bench-consume":
        bench_consume(brokers, topic, int(rest[0]))
    elif cmd == "bench-produce":
        bench_produce(brokers, topic, int(rest[0]), int(rest[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
