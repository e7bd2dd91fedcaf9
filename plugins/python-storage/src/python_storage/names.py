"""Names the plugin derives for the objects it makes: the same function as the Rust SDK's
`wukong_plugin_sdk::names::derived`, so a disk gets one claim name whichever plugin made
it (the tests of both pin the same names: `tests/test_names.py` here, `names.rs` there,
and the isolation cases of python-storage and cdi-storage).

`derived(owner, item)` is a readable part `{owner}-{item}` (any character outside
`[a-z0-9-]` becomes `-`), cut so the whole fits 63 characters and without a `-` at
either end, then `-` and ten characters of lowercase RFC 4648 base32: the first 50 bits
of SHA-256 over `owner`, a newline and `item`. The result is a DNS-1123 label.

Distinct pairs give distinct names unless their 50-bit hashes collide; a collision is no
shared disk either: the object of that name is another Wukong's, and the host's ownership
rule refuses to touch it (the step fails with `NameTaken`).

Only the standard library: `hashlib` and `base64` are built into componentize-py's
CPython.
"""

import base64
import hashlib

# The longest Kubernetes name that is also a DNS-1123 label.
MAX_LEN = 63
# Characters of the hash suffix.
HASH_LEN = 10
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def derived(owner: str, item: str) -> str:
    digest = hashlib.sha256(f"{owner}\n{item}".encode("utf-8")).digest()
    suffix = base64.b32encode(digest).decode("ascii").lower()[:HASH_LEN]
    readable = "".join(c if c in _LABEL_CHARS else "-" for c in f"{owner}-{item}")
    readable = readable[: MAX_LEN - 1 - HASH_LEN].strip("-")
    return f"{readable}-{suffix}" if readable else suffix
