from collections.abc import Mapping, Sequence

def rounds(order: Sequence[str], cands: Mapping[str, Sequence[str]], left: dict[str, float], room: dict[str, float],
           floor: float, old: Mapping[str, dict[str, float]] | None = None, /) -> dict[str, dict[str, float]]: ...
