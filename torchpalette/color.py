"""Colour conversion, parsing and hex formatting for channel-last colour lists.

sRGB colours are ``[..., 3]`` floats in [0, 1]. CIELAB (D65, 2° observer) has L in [0, 100] and
a, b roughly in [-128, 127]; Oklab (Ottosson 2020) has L in [0, 1] and a, b roughly in
[-0.4, 0.4]. These are the checked public conversions; the one implementation of each (shared
with the pixel paths of palettes and quantization) is in ``torchpalette._spaces``: sRGB ->
CIELAB uses kornia.color's formulas and constants, CIELAB -> sRGB and the sRGB transfer
functions are kornia's, Oklab's two matrix steps are ours. :func:`parse_colors` reads hex codes,
CSS names and integer triples; :func:`to_hex` writes ``#rrggbb``.

References:
    IEC 61966-2-1:1999 (sRGB). CIE 15:2004 (CIELAB).
    B. Ottosson, "A perceptual color space for image processing", 2020,
    https://bottosson.github.io/posts/oklab/
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import _spaces
from . import _validate as v

__all__ = [
    "srgb_to_lab",
    "lab_to_srgb",
    "srgb_to_oklab",
    "oklab_to_srgb",
    "parse_colors",
    "to_hex",
    "CSS_COLORS",
]


def _float(colors: Tensor) -> Tensor:
    # kornia silently accepts uint8 and returns garbage (L ~ 4425): never hand it integers.
    return colors if colors.dtype in (torch.float32, torch.float64) else colors.float()


def srgb_to_lab(colors: Tensor) -> Tensor:
    """Convert sRGB colours to CIELAB (D65).

    Args:
        colors: ``[..., 3]`` float sRGB in [0, 1].

    Returns:
        ``[..., 3]`` Lab, L in [0, 100]; float32 or float64 as given (half becomes float32).

    Raises:
        TypeError: not a float tensor.
        ValueError: last dim is not 3, empty, NaN/inf, or values outside [0, 1].

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.srgb_to_lab(torch.tensor([1.0, 0.0, 0.0])).round(decimals=2)
        tensor([53.2400, 80.0900, 67.2000])
    """
    v.check_colors(colors, "colors")
    return _spaces.srgb_to_lab(_float(colors))


def lab_to_srgb(lab: Tensor, *, clip: bool = True) -> Tensor:
    """Convert CIELAB (D65) colours to sRGB.

    Args:
        lab: ``[..., 3]`` float Lab, L in [0, 100].
        clip: clamp out-of-gamut results to [0, 1] (the default, so the result is valid sRGB).

    Returns:
        ``[..., 3]`` float sRGB.

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.lab_to_srgb(torch.tensor([[100.0, 0.0, 0.0]])).round()
        tensor([[1., 1., 1.]])
    """
    v.check_colors(lab, "lab", value_range=None)
    return _spaces.lab_to_srgb(_float(lab), clip)


def srgb_to_oklab(colors: Tensor) -> Tensor:
    """Convert sRGB colours to Oklab (Ottosson 2020).

    Args:
        colors: ``[..., 3]`` float sRGB in [0, 1].

    Returns:
        ``[..., 3]`` Oklab (L in [0, 1]).

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.srgb_to_oklab(torch.tensor([1.0, 1.0, 1.0])).round(decimals=3).abs()
        tensor([1., 0., 0.])
    """
    v.check_colors(colors, "colors")
    return _spaces.srgb_to_oklab(_float(colors))


def oklab_to_srgb(oklab: Tensor, *, clip: bool = True) -> Tensor:
    """Convert Oklab colours to sRGB (clamped to [0, 1] unless ``clip=False``).

    Args:
        oklab: ``[..., 3]`` float Oklab.
        clip: clamp out-of-gamut results to [0, 1].

    Returns:
        ``[..., 3]`` float sRGB.

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.oklab_to_srgb(torch.tensor([1.0, 0.0, 0.0])).round(decimals=4)
        tensor([1., 1., 1.])
    """
    v.check_colors(oklab, "oklab", value_range=None)
    return _spaces.oklab_to_srgb(_float(oklab), clip)


# The 148 named colours of CSS Color Module Level 4, section 6.1 (W3C): name, then #rrggbb.
_CSS_NAMES = """
aliceblue f0f8ff antiquewhite faebd7 aqua 00ffff aquamarine 7fffd4 azure f0ffff beige f5f5dc
bisque ffe4c4 black 000000 blanchedalmond ffebcd blue 0000ff blueviolet 8a2be2 brown a52a2a
burlywood deb887 cadetblue 5f9ea0 chartreuse 7fff00 chocolate d2691e coral ff7f50
cornflowerblue 6495ed cornsilk fff8dc crimson dc143c cyan 00ffff darkblue 00008b
darkcyan 008b8b darkgoldenrod b8860b darkgray a9a9a9 darkgreen 006400 darkgrey a9a9a9
darkkhaki bdb76b darkmagenta 8b008b darkolivegreen 556b2f darkorange ff8c00 darkorchid 9932cc
darkred 8b0000 darksalmon e9967a darkseagreen 8fbc8f darkslateblue 483d8b darkslategray 2f4f4f
darkslategrey 2f4f4f darkturquoise 00ced1 darkviolet 9400d3 deeppink ff1493 deepskyblue 00bfff
dimgray 696969 dimgrey 696969 dodgerblue 1e90ff firebrick b22222 floralwhite fffaf0
forestgreen 228b22 fuchsia ff00ff gainsboro dcdcdc ghostwhite f8f8ff gold ffd700
goldenrod daa520 gray 808080 green 008000 greenyellow adff2f grey 808080 honeydew f0fff0
hotpink ff69b4 indianred cd5c5c indigo 4b0082 ivory fffff0 khaki f0e68c lavender e6e6fa
lavenderblush fff0f5 lawngreen 7cfc00 lemonchiffon fffacd lightblue add8e6 lightcoral f08080
lightcyan e0ffff lightgoldenrodyellow fafad2 lightgray d3d3d3 lightgreen 90ee90 lightgrey d3d3d3
lightpink ffb6c1 lightsalmon ffa07a lightseagreen 20b2aa lightskyblue 87cefa
lightslategray 778899 lightslategrey 778899 lightsteelblue b0c4de lightyellow ffffe0
lime 00ff00 limegreen 32cd32 linen faf0e6 magenta ff00ff maroon 800000
mediumaquamarine 66cdaa mediumblue 0000cd mediumorchid ba55d3 mediumpurple 9370db
mediumseagreen 3cb371 mediumslateblue 7b68ee mediumspringgreen 00fa9a mediumturquoise 48d1cc
mediumvioletred c71585 midnightblue 191970 mintcream f5fffa mistyrose ffe4e1 moccasin ffe4b5
navajowhite ffdead navy 000080 oldlace fdf5e6 olive 808000 olivedrab 6b8e23 orange ffa500
orangered ff4500 orchid da70d6 palegoldenrod eee8aa palegreen 98fb98 paleturquoise afeeee
palevioletred db7093 papayawhip ffefd5 peachpuff ffdab9 peru cd853f pink ffc0cb plum dda0dd
powderblue b0e0e6 purple 800080 rebeccapurple 663399 red ff0000 rosybrown bc8f8f
royalblue 4169e1 saddlebrown 8b4513 salmon fa8072 sandybrown f4a460 seagreen 2e8b57
seashell fff5ee sienna a0522d silver c0c0c0 skyblue 87ceeb slateblue 6a5acd slategray 708090
slategrey 708090 snow fffafa springgreen 00ff7f steelblue 4682b4 tan d2b48c teal 008080
thistle d8bfd8 tomato ff6347 turquoise 40e0d0 violet ee82ee wheat f5deb3 white ffffff
whitesmoke f5f5f5 yellow ffff00 yellowgreen 9acd32
"""
_tokens = _CSS_NAMES.split()
CSS_COLORS: dict[str, str] = {n: "#" + h for n, h in zip(_tokens[::2], _tokens[1::2], strict=True)}
del _tokens

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_EXPECTED = "'#rgb', '#rrggbb', a CSS colour name, 3 ints in 0..255 or a float tensor in [0, 1]"


def _parse_one(item: object, name: str) -> tuple[float, float, float]:
    """One colour -> (r, g, b) floats in [0, 1]."""
    if isinstance(item, str):
        text = item.strip().lower()
        text = CSS_COLORS.get(text, text)
        digits = text[1:]
        if text.startswith("#") and len(digits) in (3, 6) and set(digits) <= _HEX_DIGITS:
            if len(digits) == 3:
                digits = "".join(c + c for c in digits)
            return tuple(int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
        raise ValueError(f"{name}: expected {_EXPECTED}, got {item!r}")
    if isinstance(item, Tensor):
        if item.shape != (3,):
            raise ValueError(
                f"{name}: expected a tensor of shape [3], got {v.shape_str(item.shape)}")
        if item.dtype == torch.uint8:
            return tuple(int(x) / 255.0 for x in item.tolist())  # type: ignore[return-value]
        v.check_colors(item, name)
        return tuple(float(x) for x in item.tolist())  # type: ignore[return-value]
    if isinstance(item, (tuple, list)):
        if len(item) != 3:
            raise ValueError(f"{name}: expected 3 ints in 0..255, got {len(item)} values")
        for x in item:
            if isinstance(x, bool) or not isinstance(x, numbers.Integral):
                raise TypeError(
                    f"{name}: expected 3 ints in 0..255 (use a float tensor for 0-1 values), "
                    f"got {type(x).__name__} {x!r}"
                )
            if not 0 <= int(x) <= 255:
                raise ValueError(f"{name}: expected 3 ints in 0..255, got {tuple(item)!r}")
        return tuple(int(x) / 255.0 for x in item)  # type: ignore[return-value]
    raise TypeError(f"{name}: expected {_EXPECTED}, got {type(item).__name__}")


def parse_colors(
    colors: str | Tensor | Sequence[object], *, device: torch.device | str | None = None
) -> Tensor:
    """Parse colours given as hex strings, CSS names, 0-255 int triples or 0-1 tensors.

    Accepted for each colour: ``"#rgb"``, ``"#rrggbb"`` (case-insensitive, surrounding spaces
    ignored), one of the 148 CSS Color 4 names (``"rebeccapurple"``, case-insensitive), a tuple
    or list of three ints in 0..255, or a tensor ``[3]`` (float in [0, 1], or uint8 0..255).
    The whole argument may also be one such colour, or a tensor ``[..., 3]`` (flattened to
    ``[N, 3]``). Nothing is clamped: a bad colour raises.

    Args:
        colors: one colour, a sequence of colours, or a tensor ``[..., 3]``.
        device: device of the result (default: the tensor's own device, CPU for text).

    Returns:
        ``[N, 3]`` float32 sRGB in [0, 1].

    Raises:
        TypeError: a colour of an unsupported type (floats in a tuple, None, ...).
        ValueError: an unknown name, a malformed hex string, a value outside 0..255 / [0, 1],
            a wrong length, NaN, or no colours at all. The message names the position,
            e.g. ``colors[2]``.

    Example:
        >>> import torchpalette as tp
        >>> tp.parse_colors(["#ff8800", (255, 136, 0), "RebeccaPurple", "#fff"]) * 255
        tensor([[255., 136.,   0.],
                [255., 136.,   0.],
                [102.,  51., 153.],
                [255., 255., 255.]])
    """
    if isinstance(colors, Tensor) and colors.ndim >= 1 and colors.shape[-1] == 3 and (
        colors.ndim >= 2 or colors.dtype != torch.uint8
    ):
        if colors.dtype == torch.uint8:
            out = colors.reshape(-1, 3).float() / 255.0
        else:
            out = v.check_colors(colors, "colors").reshape(-1, 3).float()
        v.check_nonempty(out, "colors")
        return out.to(device) if device is not None else out.clone()
    single = isinstance(colors, (str, Tensor)) or (
        isinstance(colors, tuple) and len(colors) == 3 and all(
            isinstance(x, numbers.Integral) for x in colors
        )
    )
    items = [colors] if single else colors
    if not isinstance(items, (list, tuple)):
        raise TypeError(
            f"colors: expected {_EXPECTED}, or a list of them, got {type(colors).__name__}")
    if len(items) == 0:
        raise ValueError("colors: expected at least one colour, got an empty sequence")
    names = ["colors"] if single else [f"colors[{i}]" for i in range(len(items))]
    rows = [_parse_one(item, n) for item, n in zip(items, names, strict=True)]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def to_hex(colors: Tensor) -> str | list[Any]:
    """Format sRGB colours as ``"#rrggbb"`` strings (each channel rounded to 0..255).

    Args:
        colors: ``[..., 3]`` float sRGB in [0, 1] (or uint8 0..255).

    Returns:
        One string for a single colour ``[3]``; a list of strings for ``[K, 3]``; nested lists
        mirroring the batch dims for ``[..., K, 3]`` (as ``Tensor.tolist`` nests).

    Raises:
        TypeError: not a tensor, or not float / uint8.
        ValueError: last dim not 3, empty, NaN/inf, or float values outside [0, 1].

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.to_hex(torch.tensor([[1.0, 0.5333, 0.0], [0.4, 0.2, 0.6]]))
        ['#ff8800', '#663399']
    """
    if isinstance(colors, Tensor) and colors.dtype == torch.uint8:
        if colors.ndim < 1 or colors.shape[-1] != 3:
            raise ValueError(f"colors: expected shape [..., 3], got {v.shape_str(colors.shape)}")
        v.check_nonempty(colors, "colors")
        ints = colors.to(torch.int64)
    else:
        v.check_colors(colors, "colors")
        ints = colors.detach().double().mul(255.0).round().to(torch.int64)
    codes = (ints[..., 0] << 16 | ints[..., 1] << 8 | ints[..., 2]).cpu()

    def fmt(x: object) -> object:
        return [fmt(y) for y in x] if isinstance(x, list) else f"#{x:06x}"

    return fmt(codes.tolist())  # type: ignore[return-value]
