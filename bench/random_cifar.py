#!/usr/bin/env python3
"""Random CIFAR-10 binary records, for speed benchmarks without the real set
(speed does not depend on the pixels): `random_cifar.py DIR N` writes N
training records to DIR/data_batch_1.bin (data_batch_2..5 empty) and 100 to
DIR/test_batch.bin, the same bytes every time."""
import os
import random
import sys

d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
random.seed(1)
for name, count in [("data_batch_1.bin", n), ("data_batch_2.bin", 0), ("data_batch_3.bin", 0),
                    ("data_batch_4.bin", 0), ("data_batch_5.bin", 0), ("test_batch.bin", 100)]:
    with open(os.path.join(d, name), "wb") as f:
        for i in range(count):
            f.write(bytes([i % 10]) + bytes(random.getrandbits(8) for _ in range(3072)))
