"""How copies look: the one settings object of the blur module (mode, shape, strength, feather)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("blur", "pixelate", "fill")
SHAPES = ("auto", "rectangle", "ellipse")


@dataclass(frozen=True)
class BlurSettings:
    """How detected regions are obscured; JSON-safe via :meth:`to_dict` for provenance."""

    mode: str = "blur"  # "blur" | "pixelate" | "fill"
    shape: str = "auto"  # "auto" (ellipse for faces) | "rectangle" | "ellipse"
    # 1.3: detector boxes are tight (hair, ears, plate frame outside) and the feathered edge
    # leaves the outermost box pixels only ~60 % obscured; growing 15 % per side covers both.
    box_scale: float = 1.3
    kernel_size: int | None = None  # fixed odd kernel size in px; None = adaptive per box
    sigma: float | None = None  # fixed std-dev in px (with kernel_size); None = derived
    # Adaptive: sigma = strength * sqrt(w * h) of the scaled box, i.e. ~13 % of a face's width:
    # about what the seed's 21 px kernel (5.2 px std-dev) does to the ~40 px faces it targeted.
    strength: float = 0.1
    feather: int = 9  # mask smoothing kernel size (the seed's third number); 0 or 1 = hard edge
    fill_color: tuple[int, int, int] = (0, 0, 0)
    seed_sigma: float | None = None  # set by from_seed_kernel: window spans this many std devs

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if not self.box_scale > 0:
            raise ValueError("box_scale must be > 0")
        if self.kernel_size is not None and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError("sigma must be > 0")
        if self.seed_sigma is not None and not self.seed_sigma > 0:
            raise ValueError("seed_sigma must be > 0")
        if self.seed_sigma is not None and self.kernel_size is None:
            raise ValueError("seed_sigma needs kernel_size (use BlurSettings.from_seed_kernel)")
        if not self.strength > 0:
            raise ValueError("strength must be > 0")
        if self.feather < 0 or (self.feather > 1 and self.feather % 2 == 0):
            raise ValueError(f"feather must be 0, 1 or an odd size, got {self.feather}")
        if len(self.fill_color) != 3 or any(not 0 <= int(c) <= 255 for c in self.fill_color):
            raise ValueError("fill_color must be three values in 0..255")

    @classmethod
    def from_seed_kernel(cls, spec: str | Sequence[float], **overrides) -> BlurSettings:
        """Settings from the seed's ``obfuscation_kernel`` ("21,2,9": size, sigma, smoothing).

        The seed's "sigma" is not a std-dev in pixels: the kernel window spans ``2 * sigma``
        std devs (and the weights are square-rooted), so a larger value blurs *less*; "21,2"
        is a Gaussian of about 5.2 px std-dev, "65,3" about 13.7 px (see :func:`seed_kernel_std_px`).
        """
        parts = [p for p in spec.split(",")] if isinstance(spec, str) else list(spec)
        if len(parts) != 3:
            raise ValueError(
                f"seed kernel spec needs 3 values 'size,sigma,smoothing', got {spec!r}"
            )
        size, seed_sigma, feather = float(parts[0]), float(parts[1]), float(parts[2])
        if size != int(size) or feather != int(feather):
            raise ValueError(f"kernel and smoothing sizes must be integers, got {spec!r}")
        values: dict[str, Any] = {
            "kernel_size": int(size),
            "seed_sigma": seed_sigma,
            "feather": int(feather),
        }
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-safe dict of every field (tuples as lists)."""
        d = asdict(self)
        d["fill_color"] = [int(c) for c in self.fill_color]
        return d

    @classmethod
    def from_dict(cls, values: dict) -> BlurSettings:
        """The inverse of :meth:`to_dict` (e.g. read back from a field's provenance); keys this
        version does not know are ignored."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "fill_color" in known:
            known["fill_color"] = tuple(int(c) for c in known["fill_color"])
        return cls(**known)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BlurSettings:
        """The look a form, an operator's ``__call__`` or a job's keywords describe: ``mode``,
        ``shape``, ``box_scale``, ``strength``, ``feather`` and ``seed_kernel`` (the original
        tool's ``"21,2,9"``, which wins over ``strength`` and ``feather``); missing or None
        values take the defaults."""
        common: dict[str, Any] = {
            "mode": params.get("mode") or cls.mode,
            "shape": params.get("shape") or cls.shape,
        }
        if params.get("box_scale") is not None:
            common["box_scale"] = float(params["box_scale"])
        seed = str(params.get("seed_kernel") or "").strip()
        if seed:
            return cls.from_seed_kernel(seed, **common)
        if params.get("feather") is not None:
            common["feather"] = int(params["feather"])
        if params.get("strength") is not None:
            common["strength"] = float(params["strength"])
        return cls(**common)


#: The keywords :meth:`BlurSettings.from_params` reads (the forms' and the jobs' names).
BLUR_PARAMS = ("mode", "shape", "box_scale", "strength", "feather", "seed_kernel")


#: The default look, shared (a frozen dataclass): what a function gets without ``settings``.
DEFAULT_SETTINGS = BlurSettings()
