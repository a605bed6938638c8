"""PaletteVQ: a learnt palette as a vector-quantization codebook (EMA updates, k-means
initialisation, dead-colour re-seeding, commitment loss). Public home: :mod:`torchpalette.nn`.

The codebook is the palette in the matching space (CIELAB by default), updated as in VQ-VAE-2
(Razavi et al. 2019) and SoundStream (Zeghidour et al. 2021): exponential moving averages of
each colour's pixel count ``N_j`` and pixel sum ``S_j``, Laplace-smoothed counts
``(N_j + eps) / (N + K eps) N``, colour ``c_j = S_j / N_j``. That is online k-means, so the
palette follows the data's pixels, not a gradient. Under ``torch.distributed`` the batch
statistics are all-reduced and re-seeding draws are rank 0's, so every rank holds the same
codebook.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .. import _dist, _policy
from .. import _validate as v
from .._image import merge_alpha, split_alpha, to_float
from .._spaces import SPACES, from_space, to_space, to_space_cf
from .._types import index_dtype_for
from ..fit import fit_palette
from ..quantize import palette_indices
from ._base import check_colors_arg, check_index_dtype, decode, plain, prepare_image
from ._soft import SPACE_UNIT, hard_soft, soft_assign

GRADIENTS = ("straight_through", "soft")


class VQOutput(NamedTuple):
    """What :class:`PaletteVQ` returns.

    Attributes:
        quantized: ``[..., 3|4, H, W]`` the image in palette colours, the input's dtype.
        indices: ``[..., H, W]`` palette index of each pixel (uint8 up to 256 colours).
        loss: scalar commitment loss (0 in eval mode), to add to the training loss.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor


class PaletteVQ(torch.nn.Module):
    """A ``colors``-colour palette learnt as a VQ codebook; one call gives the quantized
    image, its indices and the commitment loss.

    In training mode each call: initialises the palette with k-means on the first
    ``init_batches`` batches (the histogram k-means of :func:`torchpalette.fit.fit_palette`);
    assigns every pixel its nearest colour in ``space`` (one search); updates the codebook by
    EMA (``decay``, ``eps``); re-seeds every colour whose EMA share of the pixels falls below
    ``dead_threshold / colors`` with a pixel drawn in proportion to its squared error (as
    k-means++ draws), so unused colours come back where the palette fits worst. In eval mode
    the palette is fixed and the loss is 0.

    Gradients: the forward value is always the hard assignment. ``gradient=
    "straight_through"`` passes the incoming gradient to the input unchanged; ``"soft"``
    gives the input the gradient of the soft assignment at ``temperature`` (in squared JNDs
    of ``space``, see :mod:`torchpalette.nn`). The loss is ``commitment`` times the mean
    squared distance, in JNDs, between each visible pixel and its colour (the codebook is
    not trained by gradients).

    Args:
        colors: palette size, >= 1 (indices in the smallest dtype that holds it, as
            :func:`torchpalette.quantize`, unless ``index_dtype`` is given).
        space: matching space, ``"lab"`` (default, as the other layers), ``"oklab"`` or
            ``"srgb"``.
        decay: EMA decay in [0, 1).
        eps: Laplace smoothing of the EMA counts, > 0.
        commitment: weight of the commitment loss, >= 0.
        init_batches: batches whose pixels the k-means initialisation uses (one batch of
            crops is a noisy sample of a dataset's colours, and k-means keeps its minima).
        dead_threshold: re-seed colours below this fraction of a uniform share (0: never).
        gradient: ``"straight_through"`` or ``"soft"``.
        temperature: soft assignment temperature for ``gradient="soft"``, > 0.
        index_dtype: dtype of the indices (None: as :func:`torchpalette.quantize`).
        seed: seed of the k-means initialisation and the re-seeding draws.
        process_group: the ``torch.distributed`` group to synchronise over (None: the default
            group when initialised).

    Raises:
        TypeError, ValueError: a bad argument, naming it; in ``forward``, as the layers.
        RuntimeError: ``forward`` in eval mode before any training batch or load.

    Example:
        >>> import torch, torchpalette as tp
        >>> vq = tp.nn.PaletteVQ(colors=4)
        >>> vq
        PaletteVQ(colors=4, space='lab', decay=0.99, commitment=0.25)
        >>> images = torch.rand(2, 3, 8, 8, requires_grad=True)
        >>> out = vq(images)
        >>> out.quantized.shape, out.indices.dtype, out.loss.requires_grad
        (torch.Size([2, 3, 8, 8]), torch.uint8, True)
        >>> vq.counts.shape, bool(1 <= vq.perplexity <= 4)
        (torch.Size([4]), True)
        >>> test = vq.eval()(images)  # the palette fixed; indices decode to the output
        >>> torch.equal(vq.decode(test.indices), test.quantized.detach()), float(test.loss)
        (True, 0.0)
    """

    _settings = ("space", "decay", "eps", "commitment", "init_batches", "dead_threshold",
                 "gradient", "temperature", "index_dtype", "seed")
    codebook: Tensor
    ema_counts: Tensor
    ema_sums: Tensor
    counts: Tensor
    batches_seen: Tensor
    ema_steps: Tensor

    def __init__(
        self,
        colors: int = 16,
        space: str = "lab",
        *,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment: float = 0.25,
        init_batches: int = 4,
        dead_threshold: float = 0.03,
        gradient: str = "straight_through",
        temperature: float = 1.0,
        index_dtype: torch.dtype | None = None,
        seed: int = 0,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        k = v.check_int(colors, "colors", low=1)
        if index_dtype is None:
            check_colors_arg(k)
        else:
            check_index_dtype(index_dtype, k)
        self.space = v.check_choice(space, "space", SPACES)
        self.decay = v.check_positive(decay, "decay", allow_zero=True)
        if self.decay >= 1:
            raise ValueError(f"decay: expected a number in [0, 1), got {decay}")
        self.eps = v.check_positive(eps, "eps")
        self.commitment = v.check_positive(commitment, "commitment", allow_zero=True)
        self.init_batches = v.check_int(init_batches, "init_batches", low=1)
        self.dead_threshold = v.check_positive(dead_threshold, "dead_threshold", allow_zero=True)
        self.gradient = v.check_choice(gradient, "gradient", GRADIENTS)
        self.temperature = v.check_positive(temperature, "temperature")
        self.index_dtype = index_dtype
        self.seed = v.check_int(seed, "seed")
        self.process_group = process_group
        self.register_buffer("codebook", torch.zeros(k, 3))  # in ``space``
        self.register_buffer("ema_counts", torch.zeros(k))
        self.register_buffer("ema_sums", torch.zeros(k, 3))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.int64))
        self._init_images: list[Tensor] = []
        self._generator = torch.Generator().manual_seed(self.seed)

    # ------------------------------------------------------------------ views
    @property
    def colors(self) -> int:
        return self.codebook.shape[0]

    @property
    def palette(self) -> Tensor:
        """``[K, 3]`` sRGB float in [0, 1]: the codebook's colours (out-of-gamut clipped)."""
        return from_space(self.codebook, self.space).clamp(0.0, 1.0)

    @property
    def usage(self) -> Tensor:
        """``[K]`` EMA share of the pixels of each colour (sums to 1 once trained)."""
        return self.ema_counts / self.ema_counts.sum().clamp_min(1e-12)

    @property
    def perplexity(self) -> float:
        """``exp(entropy)`` of :attr:`usage`: the number of colours in effective use (1..K)."""
        p = self.usage
        return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))

    def decode(self, indices: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Indices ``[..., H, W]`` -> image ``[..., 3, H, W]`` of ``dtype`` in the palette."""
        return decode(indices, self.palette, dtype)

    def reset_usage(self) -> None:
        """Zero :attr:`counts` (total pixels per colour since initialisation or reset)."""
        self.counts.zero_()

    # ------------------------------------------------------------------ forward
    def forward(self, image: Tensor) -> VQOutput:
        """Quantize ``image [..., 3|4, H, W]`` (uint8 or float, clamped into [0, 1]) ->
        :class:`VQOutput` (quantized image of the input's shape and dtype, indices, loss)."""
        x = plain(image)
        v.check_image(x, "image", check_values=False)
        x = prepare_image(self, x)
        if self.training:
            with torch.no_grad():
                self._maybe_init(x.detach())
        elif int(self.batches_seen) == 0:
            raise RuntimeError("PaletteVQ: no palette yet; train on a batch or load a state")
        pal = self.palette
        k = pal.shape[0]
        idtype = index_dtype_for(k) if self.index_dtype is None else self.index_dtype
        with torch.no_grad():
            labels = palette_indices(x.detach(), pal, space=self.space)  # the one search
        rgb, alpha = split_alpha(x)
        hard = decode(labels, pal, x.dtype)
        loss = hard.new_zeros((), dtype=torch.float32)
        if self.training:
            with _policy.no_autocast(rgb):
                loss = self._train_step(rgb, alpha, labels, pal)
        if self.gradient == "soft" and rgb.is_floating_point() and rgb.requires_grad:
            out = hard_soft(hard, soft_assign(rgb, pal, self.space, self.temperature))
        elif rgb.is_floating_point() and rgb.requires_grad and torch.is_grad_enabled():
            out = hard + (rgb - rgb.detach()).to(hard.dtype)  # straight-through
        else:
            out = hard
        return VQOutput(merge_alpha(out, alpha), labels.to(idtype), loss)

    def _maybe_init(self, x: Tensor) -> None:
        """k-means on the pixels of the first ``init_batches`` batches (each call re-runs
        it on all of them until then); the EMA statistics restart from its assignment."""
        if int(self.batches_seen) >= self.init_batches:
            return
        self._init_images.append(x.reshape(-1, *x.shape[-3:]))
        try:
            colors = fit_palette(self._init_images, self.colors, space=self.space,
                                 max_pixels=1 << 16, seed=self.seed,
                                 process_group=self.process_group, device=x.device)
        except ValueError:  # fewer distinct colours than K: the re-seeding adds the rest
            colors = self._random_pixels(x, self.colors)
        self.codebook.copy_(to_space(colors.float(), self.space))
        self.ema_counts.zero_()
        self.ema_sums.zero_()
        self.ema_steps.zero_()
        self.counts.zero_()
        if int(self.batches_seen) + 1 >= self.init_batches:
            self._init_images = []

    def _random_pixels(self, x: Tensor, n: int) -> Tensor:
        """``n`` random sRGB pixels of ``x`` (rank 0's on every rank)."""
        rgb = to_float(split_alpha(x)[0]).movedim(-3, -1).reshape(-1, 3)
        pick = torch.randint(rgb.shape[0], (n,), generator=self._generator)
        return _dist.broadcast(rgb[pick.to(rgb.device)].float(), self.process_group)

    def _train_step(self, rgb: Tensor, alpha: Tensor | None, labels: Tensor,
                    pal: Tensor) -> Tensor:
        """EMA update, usage counts, dead-colour re-seeding; returns the commitment loss."""
        k = pal.shape[0]
        h, w = rgb.shape[-2:]
        xs = to_space_cf(to_float(rgb).reshape(-1, 3, h * w), self.space, torch.float32)
        xs = xs.transpose(1, 2).reshape(-1, 3)  # [N, 3] pixels in space, with their graph
        lab = labels.reshape(-1).long()
        wts = (torch.ones_like(lab, dtype=xs.dtype) if alpha is None
               else (alpha.reshape(-1) > 0).to(xs.dtype))
        ps = to_space(pal.float(), self.space)
        q = ps[lab]  # [N, 3] each pixel's colour in space
        err = (xs.detach() - q).square().sum(-1)  # [N]
        with torch.no_grad():
            stats = torch.zeros(k, 4, dtype=torch.float64, device=xs.device)
            stats.index_add_(0, lab, torch.cat([wts[:, None], xs.detach() * wts[:, None]], 1)
                             .double())
            stats = _dist.all_reduce(stats, self.process_group)
            self._ema(stats)
            self._reseed_dead(xs.detach(), err * wts)
            self.batches_seen += 1
        unit2 = SPACE_UNIT[self.space] ** 2
        dist = (xs - q).square().sum(-1) / unit2
        return self.commitment * (dist * wts).sum() / wts.sum().clamp_min(1.0)

    def _ema(self, stats: Tensor) -> None:
        """One EMA step from the batch's (all-reduced) counts and sums ``[K, 4]``."""
        n, s = stats[:, 0].float(), stats[:, 1:].float()
        self.counts += stats[:, 0]
        # The t-th step after initialisation averages all t batches equally until that is
        # more forgetful than ``decay`` (minibatch k-means' running means, then an EMA): a
        # plain EMA would keep the first batch's weight 0.99**t, 37 % after 100 steps.
        t = int(self.ema_steps)
        decay = min(self.decay, t / (t + 1))
        self.ema_counts.mul_(decay).add_(n, alpha=1 - decay)
        self.ema_sums.mul_(decay).add_(s, alpha=1 - decay)
        self.ema_steps += 1
        total = self.ema_counts.sum()
        k = self.colors
        smoothed = (self.ema_counts + self.eps) / (total + k * self.eps) * total
        used = self.ema_counts > 0  # a colour no pixel ever took keeps its place
        new = self.ema_sums / smoothed.clamp_min(1e-12).unsqueeze(-1)
        self.codebook.copy_(torch.where(used.unsqueeze(-1), new, self.codebook))

    def _reseed_dead(self, xs: Tensor, err: Tensor) -> None:
        """Re-seed colours whose EMA share is below ``dead_threshold / K`` with pixels drawn
        in proportion to their squared error (rank 0's draws on every rank)."""
        if self.dead_threshold <= 0:
            return
        share = self.usage
        dead = share < self.dead_threshold / self.colors
        n_dead = int(dead.sum())
        if n_dead == 0 or xs.shape[0] == 0:
            return
        p = err.double().cpu()
        p = p if float(p.sum()) > 0 else torch.ones_like(p)
        pick = torch.multinomial(p, n_dead, replacement=int(p.count_nonzero()) < n_dead,
                                 generator=self._generator)
        seeds = _dist.broadcast(xs[pick.to(xs.device)].float(), self.process_group)
        # a re-seeded colour starts at the threshold share, so it survives a few steps
        mass = self.ema_counts.sum() * self.dead_threshold / self.colors
        idx = dead.nonzero().squeeze(1)
        self.codebook[idx] = seeds
        self.ema_counts[idx] = mass
        self.ema_sums[idx] = seeds * mass

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._settings}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) - set(self._settings):
            raise ValueError(f"PaletteVQ: expected a state with settings {list(self._settings)},"
                             f" got {type(state).__name__}")
        for name, value in state.items():
            setattr(self, name, value)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        new = state_dict.get(prefix + "codebook")
        if new is not None and new.shape != self.codebook.shape:
            raise ValueError(f"PaletteVQ: codebook: expected {self.colors} colours as the layer "
                             f"holds, got a state with {new.shape[0]}; build "
                             f"PaletteVQ(colors={new.shape[0]}) to load it")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._init_images = []

    def extra_repr(self) -> str:
        extra = "" if self.gradient == "straight_through" else (
            f", gradient={self.gradient!r}, temperature={self.temperature}")
        return (f"colors={self.colors}, space={self.space!r}, decay={self.decay}, "
                f"commitment={self.commitment}{extra}")

