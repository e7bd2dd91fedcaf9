"""Kubernetes quantities (`20Gi`, `500M`, `1.5Ti`) as bytes, to compare disk sizes.

Mirrors the Rust SDK's `quantity::to_bytes`, so both languages judge sizes alike.
"""

from typing import Optional

_MULTIPLIERS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
}


def to_bytes(quantity: str) -> Optional[int]:
    """Bytes of a quantity; None when it is not one (`10Gb`, `-1Gi`, empty)."""
    quantity = quantity.strip()
    split = next(
        (i for i, c in enumerate(quantity) if not (c.isascii() and (c.isdigit() or c == "."))),
        len(quantity),
    )
    number, suffix = quantity[:split], quantity[split:]
    multiplier = _MULTIPLIERS.get(suffix)
    if multiplier is None:
        return None
    whole, _, fraction = number.partition(".")
    if not whole and not fraction:
        return None
    if "." in fraction:
        return None
    total = int(whole or "0") * multiplier
    if fraction:
        # Integer arithmetic, truncating like the Rust SDK: no float rounding surprises.
        total += int(fraction) * multiplier // 10 ** len(fraction)
    return total
