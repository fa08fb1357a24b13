"""Image sizes written as text: `512x1024` is height 512, width 1024 (the order of a numpy array's shape)."""

from __future__ import annotations

from csst_edge.errors import ConfigError


def parse_hw(text: str, option: str = "size", minimum: int = 1, square: bool = True) -> tuple[int, int]:
    """'512x1024' → (512, 1024); 'X' and '×' also separate, spaces are ignored, a single number means a square
    (unless `square=False`: where a lone number is ambiguous, e.g. `bench --sizes 512`, it is an error).

    Anything else, or a side below `minimum`, is a `ConfigError` naming `option` and the text, so every command
    reports a bad size the same way (one line, exit code 1).
    """
    parts = str(text).strip().lower().replace("×", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1 and square:
        size = size * 2
    if len(size) != 2:
        raise ConfigError(f"{option}: '{text}' is not HEIGHTxWIDTH in pixels, e.g. 512x1024")
    if min(size) < minimum:
        raise ConfigError(f"{option}: '{text}' is too small (at least {minimum}x{minimum})")
    return size
