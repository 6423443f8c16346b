# mitmproxy addon for the proxy benchmark: the same work SLAPENIR does on the benchmark's
# traffic, done the way a mitmproxy user would. Requests: the dummy is swapped for the real
# value in header values, the URL and the body (only towards the bound host). Responses: the
# real value is replaced by [REDACTED] in header values and the body. Bodies are streamed
# (mitmproxy's `flow.*.stream` callables) with a carry-over so a value cut across chunks is
# still found, like SLAPENIR's scanners; the upstream is asked for identity encoding.
# Reads {"dummy", "real", "host"} from the JSON file named by BENCH_MITM_SECRETS. Bench only;
# it never prints a value.

import json
import os

from mitmproxy import http


class StreamReplace:
    """Replace one byte string in a stream of chunks; b"" marks the end of the stream."""

    def __init__(self, find: bytes, repl: bytes):
        self.find = find
        self.repl = repl
        self.keep = len(find) - 1
        self.carry = b""

    def __call__(self, data: bytes) -> bytes:
        buf = self.carry + data if self.carry else data
        if not data:  # end of stream: flush
            self.carry = b""
            return buf.replace(self.find, self.repl)
        out = []
        i = 0
        n = len(self.find)
        limit = len(buf) - n
        while True:
            j = buf.find(self.find, i)
            if j < 0 or j > limit:
                break
            out.append(buf[i:j])
            out.append(self.repl)
            i = j + n
        # Keep a possible partial match for the next chunk.
        safe = max(i, len(buf) - self.keep)
        out.append(buf[i:safe])
        self.carry = buf[safe:]
        return b"".join(out)


class SwapRedact:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MITM_SECRETS"], encoding="utf-8") as f:
            cfg = json.load(f)
        self.dummy = cfg["dummy"]
        self.real = cfg["real"]
        self.host = cfg["host"]
        self.dummy_b = self.dummy.encode()
        self.real_b = self.real.encode()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        bound = req.pretty_host == self.host
        if bound:
            for k, v in list(req.headers.items(multi=True)):
                if self.dummy in v:
                    req.headers[k] = v.replace(self.dummy, self.real)
            if self.dummy in req.path:
                req.path = req.path.replace(self.dummy, self.real)
            req.stream = StreamReplace(self.dummy_b, self.real_b)
        else:
            req.stream = True
        # The proxy must see plaintext bodies.
        req.headers["accept-encoding"] = "identity"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        res = flow.response
        for k, v in list(res.headers.items(multi=True)):
            if self.real in v:
                res.headers[k] = v.replace(self.real, "[REDACTED]")
        res.stream = StreamReplace(self.real_b, b"[REDACTED]")
        # The redacted body may differ in length: send it chunked.
        if "content-length" in res.headers:
            del res.headers["content-length"]
            res.headers["transfer-encoding"] = "chunked"


addons = [SwapRedact()]
