# Leaf-certificate cost in mitmproxy, for the proxy benchmark's ratio: a first mint
# (CertStore.get_cert for a host it has not seen: one signature by its CA over a new leaf,
# reusing its one leaf key, as SLAPENIR does) and a cached lookup. Prints one JSON line with
# microseconds per call (median of batches). Usage: python3 bench/mitm_certs.py CONFDIR.
# Bench only.

import json
import statistics
import sys
import time

from mitmproxy.certs import CertStore


def per_call(fn, calls: int, batches: int) -> float:
    samples = []
    for b in range(batches):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(b, i)
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    store = CertStore.from_store(sys.argv[1], "mitmproxy", 2048)
    store.get_cert("cached.example.com", ["cached.example.com"])
    first = per_call(
        lambda b, i: store.get_cert(f"h{b}-{i}.example.com", [f"h{b}-{i}.example.com"]),
        200,
        7,
    )
    cached = per_call(
        lambda b, i: store.get_cert("cached.example.com", ["cached.example.com"]), 5000, 7
    )
    print(json.dumps({"first_mint_us": first, "cached_us": cached}))


main()
